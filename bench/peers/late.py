"""The cost of one late event: after an engine has taken in the base events and holds
their aggregates, one new event lands in a past hour window (the hour of the file's
first event, for that event's customer); the latency is the time from handing it to the
engine until the corrected window can be read.

- openmonetize: `openmonetize serve` (the same job, fed over HTTP) loaded with the base
  events; the late event is one POST /v1/events, which answers after the commit that
  holds it (tables and checkpoint written), so its round trip is the latency. The window
  is then read back with POST /v1/query to check it changed.
- duckdb: the base events in a table with their aggregates; the late event is an INSERT
  followed by recomputing the aggregates (a batch engine has no incremental update).
- pathway: a streaming run (Python connector) over the base events; after it is idle,
  the late event is pushed and the latency runs until the subscriber sees the corrected
  window.
- bytewax is not measured: its fold emits once the input ends, and its event-time
  windows close and drop late data; an incremental Bytewax flow is a different program.
"""

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from time import monotonic
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import engines  # noqa: E402


def late_event(base):
    """The late event for `base`: a new id, the first event's customer and hour."""
    with open(base) as f:
        first = json.loads(f.readline())
    us = engines.micros(first["timestamp"])
    return {
        "id": "peers-bench-late-1",
        "tenant_id": first.get("tenant_id", "default"),
        "customer_id": first["customer_id"],
        "event_type": "api_call",
        "timestamp": (us - us % engines.HOUR_US) // 1000 + 1,  # epoch ms, inside that hour
        "value": "2.5",
    }


def measure(engine, base, args, workers, config):
    return {"openmonetize": om, "duckdb": duck, "pathway": pathway}[engine](base, args, workers, config)


# --- openmonetize ------------------------------------------------------------------------
def om(base, args, workers, config):
    data = os.path.join(args.workdir, "om-late")
    shutil.rmtree(data, ignore_errors=True)
    key = "peers-bench-admin-key"
    cfg = os.path.join(args.workdir, "om-late.toml")
    with open(config) as src, open(cfg, "w") as dst:
        dst.write(src.read())
        dst.write(f'\n[[api_keys]]\nadmin = true\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n')
    p = subprocess.Popen(
        [args.bin, "serve", "--data", data, "--config", cfg, "--listen", "127.0.0.1:0",
         "--workers", str(workers), "--quiet"],
        stdout=subprocess.PIPE, stderr=open(os.path.join(args.workdir, "om-late.log"), "w"), text=True,
    )
    try:
        line = p.stdout.readline()
        if not line.startswith("listening on http://"):
            sys.exit(f"openmonetize serve did not start: {line!r}")
        host, port = line.strip().removeprefix("listening on http://").rsplit(":", 1)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        local = threading.local()

        def post(path, body):
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection(host, int(port), timeout=120)
            local.conn.request("POST", path, body=body, headers=headers)
            r = local.conn.getresponse()
            text = r.read()
            if r.status != 200:
                sys.exit(f"POST {path}: {r.status} {text[:300]!r}")
            return json.loads(text)

        def batches():
            with open(base) as f:
                batch = []
                for line in f:
                    batch.append(line.strip())
                    if len(batch) == 1000:
                        yield "[" + ",".join(batch) + "]"
                        batch = []
                if batch:
                    yield "[" + ",".join(batch) + "]"

        started = time.monotonic()
        with ThreadPoolExecutor(64) as pool:
            answers = list(pool.map(lambda b: post("/v1/events", b), batches()))
        loaded = time.monotonic() - started
        accepted = sum(a["accepted"] for a in answers)
        ev = late_event(base)
        sql = json.dumps({"sql": (
            "SELECT value, events FROM usage_windows WHERE window_size = 'hour' AND meter = 'api_call'"
            f" AND tenant_id = '{ev['tenant_id']}' AND customer_id = '{ev['customer_id']}'"
            f" AND window_start = '{engines.iso((ev['timestamp'] - 1) * 1000)}'")})
        before = post("/v1/query", sql)["rows"]
        t0 = time.monotonic()
        answer = post("/v1/events", json.dumps(ev))
        latency = time.monotonic() - t0
        after = post("/v1/query", sql)["rows"]
        if answer["accepted"] != 1 or after == before:
            sys.exit(f"openmonetize: the late event was not applied: {answer}, {before} -> {after}")
        return latency, (f"serve, HTTP-loaded ({accepted:,} accepted in {loaded:.0f} s); POST answered"
                         f" after its commit; window {before} -> {after}")
    finally:
        p.terminate()
        p.wait(timeout=120)


# --- duckdb ------------------------------------------------------------------------------
def duck(base, args, workers, config):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {workers}")
    con.execute("SET TimeZone = 'UTC'")
    src = base.replace("'", "''")
    con.execute(f"""
        CREATE TABLE raw AS SELECT * FROM read_json('{src}', format = 'newline_delimited',
          columns = {{id: 'VARCHAR', tenant_id: 'VARCHAR', customer_id: 'VARCHAR',
                     event_type: 'VARCHAR', timestamp: 'VARCHAR', value: 'VARCHAR'}})""")
    agg = """
        CREATE OR REPLACE TABLE agg AS
        WITH d AS (
          SELECT coalesce(tenant_id, 'default') AS tenant_id, id, any_value(customer_id) AS customer_id,
                 any_value(event_type) AS event_type, any_value(timestamp) AS ts, any_value(value) AS v
          FROM raw GROUP BY 1, 2),
        e AS (
          SELECT tenant_id, customer_id, event_type,
                 CASE WHEN ts LIKE '%-%' THEN CAST(CAST(ts AS TIMESTAMPTZ) AS TIMESTAMP)
                      ELSE make_timestamp(CAST(ts AS BIGINT) * 1000) END AS event_at,
                 CAST(coalesce(v, '1') AS DECIMAL(38, 9)) AS val FROM d)
        SELECT tenant_id, customer_id, event_type, 'hour' AS window_size,
               date_trunc('hour', event_at) AS window_start, SUM(val) AS value, COUNT(*) AS events
        FROM e GROUP BY ALL
        UNION ALL
        SELECT tenant_id, customer_id, event_type, 'day', date_trunc('day', event_at), SUM(val), COUNT(*)
        FROM e GROUP BY ALL"""
    con.execute(agg)
    ev = late_event(base)
    t0 = time.monotonic()
    con.execute("INSERT INTO raw VALUES (?, ?, ?, ?, ?, ?)",
                [ev["id"], ev["tenant_id"], ev["customer_id"], ev["event_type"], str(ev["timestamp"]), ev["value"]])
    con.execute(agg)
    latency = time.monotonic() - t0
    return latency, "INSERT + recompute all aggregates from the loaded table (no re-parse)"


# --- pathway -----------------------------------------------------------------------------
def pathway(base, args, workers, config):
    out = os.path.join(args.workdir, "pathway-late.json")
    cmd = [sys.executable, os.path.abspath(__file__), "pathway-child", base, out]
    env = dict(os.environ, PATHWAY_THREADS=str(workers))
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=open(os.path.join(args.workdir, "pathway-late.log"), "w"))
    r = json.load(open(out))
    return r["latency"], (f"streaming run (Python connector, autocommit 10 ms) over the base events;"
                          f" window events {r['before']} -> {r['after']}")


def pathway_child(base, out):
    import pathway as pw

    ev = late_event(base)
    target = (ev["tenant_id"], ev["customer_id"], ev["event_type"],
              ev["timestamp"] * 1000 - (ev["timestamp"] * 1000) % engines.HOUR_US)
    state = {"last_change": time.monotonic(), "events": 0, "seen_at": None, "sent_at": None}
    lock = threading.Lock()

    class Event(pw.Schema):
        event_id: str  # not `id`: that is every Pathway table's row key
        tenant_id: str
        customer_id: str
        event_type: str
        us: int
        nanos: int

    def row(e):
        return dict(event_id=e["id"], tenant_id=e.get("tenant_id", "default"), customer_id=e["customer_id"],
                    event_type=e["event_type"], us=engines.micros(e["timestamp"]),
                    nanos=engines.nanos(e.get("value")))

    class Subject(pw.io.python.ConnectorSubject):
        def run(self):
            with open(base) as f:
                for line in f:
                    self.next(**row(json.loads(line)))
            self.commit()
            while True:  # idle: no output change for 2 s
                time.sleep(0.2)
                with lock:
                    if time.monotonic() - state["last_change"] > 2.0:
                        state["before"] = state["events"]
                        state["sent_at"] = time.monotonic()
                        break
            self.next(**row(ev))
            self.commit()
            while True:
                time.sleep(0.001)
                with lock:
                    if state["seen_at"] is not None:
                        break

    t = pw.io.python.read(Subject(), schema=Event, autocommit_duration_ms=10)
    d = t.groupby(t.tenant_id, t.event_id).reduce(
        t.tenant_id, customer_id=pw.reducers.any(t.customer_id), event_type=pw.reducers.any(t.event_type),
        us=pw.reducers.any(t.us), nanos=pw.reducers.any(t.nanos))
    w = d.select(d.tenant_id, d.customer_id, d.event_type, d.nanos, start=d.us - d.us % engines.HOUR_US)
    hours = w.groupby(w.tenant_id, w.customer_id, w.event_type, w.start).reduce(
        w.tenant_id, w.customer_id, w.event_type, w.start,
        value_nanos=pw.reducers.sum(w.nanos), events=pw.reducers.count())

    def on_change(key, row, time, is_addition):  # noqa: A002 (pathway passes time=)
        now = monotonic()
        with lock:
            state["last_change"] = now
            if is_addition and (row["tenant_id"], row["customer_id"], row["event_type"], row["start"]) == target:
                state["events"] = row["events"]
                if state["sent_at"] is not None and state["seen_at"] is None:
                    state["seen_at"] = now

    pw.io.subscribe(hours, on_change=on_change)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    json.dump({"latency": state["seen_at"] - state["sent_at"], "before": state["before"],
               "after": state["events"]}, open(out, "w"))


if __name__ == "__main__":
    if sys.argv[1] == "pathway-child":
        pathway_child(sys.argv[2], sys.argv[3])
