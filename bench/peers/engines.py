"""The peer engines of bench/peers: one function per engine, each run in its own process.

    python engines.py ENGINE --input events.jsonl --out result.csv --workers W

Every engine computes the same thing from the generator's JSONL (bench/peers/README.md):
drop duplicates (a later line with an earlier line's (tenant_id, id)), then for every
(tenant_id, customer_id, event_type) the sum of `value` (1 when absent; exact decimals)
and the count of events per UTC hour and per UTC day. Each writes the canonical CSV

    tenant_id,customer_id,event_type,window_size,window_start,value,events

with window_start as YYYY-MM-DDTHH:MM:SSZ and value as an exact decimal or as an integer
count of 10^-9 units (`value_nanos`, column name says which). run.py compares them.
"""

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from decimal import Decimal

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def micros(ts):
    """Event time in microseconds: RFC 3339 text (the generator writes ...Z) or epoch ms."""
    if isinstance(ts, int):
        return ts * 1000
    delta = datetime.fromisoformat(ts.replace("Z", "+00:00")) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def nanos(value):
    """A JSON value (number or decimal string; 1 when absent) as an exact integer of 10^-9."""
    if value is None:
        return 1_000_000_000
    return int(Decimal(str(value)).scaleb(9))


def iso(us):
    return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- DuckDB: SQL over the file (the batch lower bound) ---------------------------------
def duckdb_engine(args):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {args.workers}")
    con.execute("SET TimeZone = 'UTC'")
    src = args.input.replace("'", "''")
    con.execute(f"""
        CREATE TEMP TABLE raw AS SELECT * FROM read_json('{src}', format = 'newline_delimited',
          columns = {{id: 'VARCHAR', tenant_id: 'VARCHAR', customer_id: 'VARCHAR',
                     event_type: 'VARCHAR', timestamp: 'VARCHAR', value: 'VARCHAR'}})""")
    con.execute("""
        CREATE TEMP TABLE ev AS
        WITH d AS (
          SELECT coalesce(tenant_id, 'default') AS tenant_id, id,
                 any_value(customer_id) AS customer_id, any_value(event_type) AS event_type,
                 any_value(timestamp) AS ts, any_value(value) AS v
          FROM raw GROUP BY 1, 2)
        SELECT tenant_id, customer_id, event_type,
               CASE WHEN ts LIKE '%-%' THEN CAST(CAST(ts AS TIMESTAMPTZ) AS TIMESTAMP)
                    ELSE make_timestamp(CAST(ts AS BIGINT) * 1000) END AS event_at,
               CAST(coalesce(v, '1') AS DECIMAL(38, 9)) AS val
        FROM d""")
    con.execute(f"""
        COPY (
          SELECT tenant_id, customer_id, event_type, 'hour' AS window_size,
                 strftime(date_trunc('hour', event_at), '%Y-%m-%dT%H:%M:%SZ') AS window_start,
                 SUM(val) AS value, COUNT(*) AS events
          FROM ev GROUP BY ALL
          UNION ALL
          SELECT tenant_id, customer_id, event_type, 'day',
                 strftime(date_trunc('day', event_at), '%Y-%m-%dT%H:%M:%SZ'), SUM(val), COUNT(*)
          FROM ev GROUP BY ALL
        ) TO '{args.out}' (HEADER, DELIMITER ',')""")


# --- Pathway: differential dataflow under Python ----------------------------------------
def pathway_engine(args):
    os.environ["PATHWAY_THREADS"] = str(args.workers)
    import pathway as pw

    class Event(pw.Schema):
        # `id` is every Pathway table's row key: the event's id is read as event_id.
        event_id: str
        tenant_id: str = pw.column_definition(default_value="default")
        customer_id: str
        event_type: str
        timestamp: pw.Json
        value: pw.Json = pw.column_definition(default_value=None)

    t = pw.io.jsonlines.read(args.input, schema=Event, mode="static", json_field_paths={"event_id": "/id"})
    # Dedup: one row per (tenant_id, id); duplicates are exact copies, so any row will do.
    d = t.groupby(t.tenant_id, t.event_id).reduce(
        t.tenant_id,
        customer_id=pw.reducers.any(t.customer_id),
        event_type=pw.reducers.any(t.event_type),
        timestamp=pw.reducers.any(t.timestamp),
        value=pw.reducers.any(t.value),
    )
    e = d.select(
        d.tenant_id,
        d.customer_id,
        d.event_type,
        us=pw.apply_with_type(lambda j: micros(j.value), int, d.timestamp),
        nanos=pw.apply_with_type(lambda j: nanos(None if j is None else j.value), int, d.value),
    )
    outs = []
    for size, span in (("hour", HOUR_US), ("day", DAY_US)):
        w = e.select(e.tenant_id, e.customer_id, e.event_type, e.nanos, start=e.us - e.us % span)
        outs.append(
            w.groupby(w.tenant_id, w.customer_id, w.event_type, w.start).reduce(
                w.tenant_id,
                w.customer_id,
                w.event_type,
                window_size=size,
                window_start=w.start,
                value_nanos=pw.reducers.sum(w.nanos),
                events=pw.reducers.count(),
            )
        )
    result = outs[0].concat_reindex(outs[1])
    raw = args.out + ".pathway"
    pw.io.csv.write(result, raw)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    consolidate_pathway_csv(raw, args.out)


def consolidate_pathway_csv(raw, out):
    """Pathway's CSV is a change log (time, diff): keep the rows whose diffs sum to 1."""
    import csv

    net = {}
    with open(raw, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["tenant_id"], row["customer_id"], row["event_type"], row["window_size"],
                   row["window_start"], row["value_nanos"], row["events"])
            net[key] = net.get(key, 0) + int(row["diff"])
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tenant_id", "customer_id", "event_type", "window_size", "window_start", "value_nanos", "events"])
        for (tn, c, et, size, start, v, n), k in net.items():
            if k == 1:
                w.writerow([tn, c, et, size, iso(int(start)), v, n])
            elif k != 0:
                sys.exit(f"pathway output: row {(tn, c, et, size, start)} has net multiplicity {k}")
    os.remove(raw)


# --- Bytewax: timely dataflow under Python ----------------------------------------------
def bytewax_flow(path, out):
    """Reads the file, keys events by (tenant, customer), and folds each customer's
    events (dedup set + hour/day sums and counts) until the input ends."""
    from bytewax import operators as op
    from bytewax.connectors.files import FileSink, FileSource
    from bytewax.dataflow import Dataflow

    def parse(line):
        e = json.loads(line)
        return (f"{e.get('tenant_id', 'default')}\t{e['customer_id']}", e)

    def builder():
        return (set(), {})

    def folder(state, e):
        seen, windows = state
        if e["id"] in seen:
            return state
        seen.add(e["id"])
        us, v = micros(e["timestamp"]), nanos(e.get("value"))
        for size, span in (("hour", HOUR_US), ("day", DAY_US)):
            k = (e["event_type"], size, us - us % span)
            acc = windows.get(k)
            if acc is None:
                windows[k] = [v, 1]
            else:
                acc[0] += v
                acc[1] += 1
        return state

    def rows(key_state):
        key, (_, windows) = key_state
        tenant, customer = key.split("\t")
        return [("out", f"{tenant},{customer},{et},{size},{iso(start)},{v},{n}")
                for (et, size, start), (v, n) in windows.items()]

    flow = Dataflow("om_peers")
    lines = op.input("read", flow, FileSource(path))
    keyed = op.map("parse", lines, parse)
    folded = op.fold_final("fold", keyed, builder, folder)
    out_lines = op.flat_map("rows", folded, rows)
    open(out, "w").close()  # FileSink writes into an existing file, from one worker
    op.output("write", out_lines, FileSink(out))
    return flow


def bytewax_engine(args):
    from bytewax.testing import cluster_main

    body = args.out + ".body"
    # cluster_main runs the flow on `workers` threads of this process.
    cluster_main(bytewax_flow(args.input, body), addresses=[], proc_id=0, worker_count_per_proc=args.workers)
    with open(args.out, "w") as f:
        f.write("tenant_id,customer_id,event_type,window_size,window_start,value_nanos,events\n")
        with open(body) as b:
            f.write(b.read())
    os.remove(body)


ENGINES = {"duckdb": duckdb_engine, "pathway": pathway_engine, "bytewax": bytewax_engine}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("engine", choices=sorted(ENGINES))
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    ENGINES[args.engine](args)


if __name__ == "__main__":
    main()
