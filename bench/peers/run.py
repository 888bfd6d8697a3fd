"""Driver of bench/peers (run through run.sh): runs every engine on the same events file,
measures each in its own child process (wall time, peak RSS from wait4), checks that all
produced the same aggregates, measures the cost of one late event, prints the tables.
"""

import argparse
import csv
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from decimal import Decimal

import late

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(cmd, log):
    """Runs cmd; returns (seconds, peak RSS MiB). Fails loudly on a non-zero exit.

    Peak RSS comes from GNU time (`/usr/bin/time -f %M`), which forks the engine from its
    own small process: a child forked straight from this driver would report the
    driver's memory at fork time (Linux carries the high-water mark across exec)."""
    rss_file = log + ".rss"
    start = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.call(["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd, stdout=out, stderr=subprocess.STDOUT)
    secs = time.monotonic() - start
    if code != 0:
        sys.exit(f"{' '.join(cmd)} exited with {code}\n{open(log).read()[-3000:]}")
    return secs, int(open(rss_file).read().split()[-1]) / 1024


def canonical_csv(path):
    """{(tenant, customer, event_type, size, start): (value in 10^-9 units, events)}."""
    rows = {}
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        nanos_col = "value_nanos" in r.fieldnames
        for row in r:
            v = int(row["value_nanos"]) if nanos_col else int(Decimal(row["value"]).scaleb(9))
            key = (row["tenant_id"], row["customer_id"], row["event_type"], row["window_size"], row["window_start"])
            if key in rows:
                sys.exit(f"{path}: two rows for {key}")
            rows[key] = (v, int(row["events"]))
    return rows


def openmonetize_rows(data):
    """usage_windows of the newest commit, read with pyarrow (hour and day windows)."""
    import pyarrow.parquet as pq

    commit = json.load(open(sorted(glob.glob(os.path.join(data, "_commits", "*.json")))[-1]))
    rows = {}
    for entry in commit["tables"].get("usage_windows", {}).values():
        t = pq.read_table(os.path.join(data, entry["path"])).to_pydict()
        for i in range(len(t["meter"])):
            if t["window_size"][i] not in ("hour", "day"):
                continue
            key = (t["tenant_id"][i], t["customer_id"][i], t["meter"][i], t["window_size"][i],
                   t["window_start"][i].strftime("%Y-%m-%dT%H:%M:%SZ"))
            if key in rows:
                sys.exit(f"openmonetize: two rows for {key}")
            rows[key] = (int(t["value"][i].scaleb(9)), t["events"][i])
    return rows, commit["counts"]


def compare(results):
    """Every engine's rows against the first engine's; returns a list of problems."""
    (ref_name, ref), *others = results.items()
    problems = []
    for name, rows in others:
        if rows == ref:
            continue
        missing = ref.keys() - rows.keys()
        extra = rows.keys() - ref.keys()
        differ = [k for k in ref.keys() & rows.keys() if ref[k] != rows[k]]
        problems.append(
            f"{name} differs from {ref_name}: {len(missing)} groups missing, {len(extra)} extra, "
            f"{len(differ)} with other values (e.g. {(differ or sorted(missing) or sorted(extra))[:1]})"
        )
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--events", type=int, required=True, help="lines in --input")
    ap.add_argument("--bin", required=True, help="the openmonetize binary")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--engines", default="openmonetize,duckdb,pathway,bytewax")
    ap.add_argument("--engine-workers", default="",
                    help="per-engine worker counts overriding --workers, e.g. bytewax=1 (Bytewax's"
                         " second worker slows it down: its workers share one GIL)")
    ap.add_argument("--late", default="openmonetize,duckdb,pathway",
                    help="engines whose late-event cost to measure ('' for none)")
    ap.add_argument("--late-base", type=int, default=0,
                    help="events loaded before the late event (0: all of --input)")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    engines = args.engines.split(",")
    os.makedirs(args.workdir, exist_ok=True)
    config = os.path.join(HERE, "openmonetize.toml")

    only = {}
    for item in filter(None, args.engine_workers.split(",")):
        engine, _, counts = item.partition("=")
        only[engine] = {int(c) for c in counts.split("+")}
    table = []
    for w in workers:
        results = {}
        for engine in engines:
            if engine in only and w not in only[engine]:
                continue
            log = os.path.join(args.workdir, f"{engine}-w{w}.log")
            print(f"  {engine}, {w} worker(s)...", file=sys.stderr, flush=True)
            if engine == "openmonetize":
                data = os.path.join(args.workdir, f"om-data-w{w}")
                shutil.rmtree(data, ignore_errors=True)
                cmd = [args.bin, "run", "--config", config, "--events", f"file:{args.input}",
                       "--data", data, "--workers", str(w), "--quiet"]
                secs, rss = measure(cmd, log=log)
                results[engine], counts = openmonetize_rows(data)
                note = f"accepted {counts['accepted']}, duplicates {counts['duplicates']}, late {counts['late']}"
            else:
                out = os.path.join(args.workdir, f"{engine}-w{w}.csv")
                cmd = [sys.executable, os.path.join(HERE, "engines.py"), engine, "--input", args.input,
                       "--out", out, "--workers", str(w)]
                secs, rss = measure(cmd, log=log)
                results[engine] = canonical_csv(out)
                note = ""
            table.append((engine, w, secs, args.events / secs, rss, len(results[engine]), note))
            # Each row as soon as it is measured (stderr, and a JSON line in the work
            # directory), so a run stopped early keeps what it measured.
            row = {"engine": engine, "workers": w, "seconds": round(secs, 2),
                   "events_per_sec": round(args.events / secs), "peak_rss_mib": round(rss),
                   "groups": len(results[engine]), "note": note}
            print(f"    {json.dumps(row)}", file=sys.stderr, flush=True)
            with open(os.path.join(args.workdir, "results.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")
        problems = compare(results)
        verdict = "all engines agree" if not problems else "; ".join(problems)
        table.append(("check", w, None, None, None, None, verdict))
        print(f"    check, {w} worker(s): {verdict}", file=sys.stderr, flush=True)
        if problems:
            print_table(table, args)
            sys.exit(f"correctness check failed with {w} worker(s): {verdict}")
    print_table(table, args)

    if args.late:
        base = args.input
        if args.late_base and args.late_base < args.events:
            base = os.path.join(args.workdir, f"late-base-{args.late_base}.jsonl")
            with open(args.input) as src, open(base, "w") as dst:
                for i, line in enumerate(src):
                    if i >= args.late_base:
                        break
                    dst.write(line)
        n = args.late_base or args.events
        print(f"\nCost of one late event (after {n:,} events; one new event into a past hour window;"
              f" time until the corrected window is readable), {max(workers)} worker(s):")
        print("| engine | latency | how |")
        print("|---|---|---|")
        for engine in args.late.split(","):
            print(f"  late event: {engine}...", file=sys.stderr, flush=True)
            secs, how = late.measure(engine, base, args, max(workers), config)
            print(f"| {engine} | {secs * 1000:,.1f} ms | {how} |", flush=True)


def print_table(table, args):
    print(f"\nPeer benchmark: {args.events:,} events ({args.input}); hour and day windows, sum and count per"
          " (tenant, customer, event type); exact decimals")
    print("| engine | workers | seconds | events/s | peak RSS MiB | groups | notes |")
    print("|---|---|---|---|---|---|---|")
    for engine, w, secs, rate, rss, groups, note in table:
        if secs is None:
            print(f"| **check** | {w} | | | | | {note} |")
        else:
            print(f"| {engine} | {w} | {secs:.2f} | {rate:,.0f} | {rss:,.0f} | {groups:,} | {note} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
