"""psycopg 3 against `openmonetize serve --pg-listen`: run by pipeline/tests/integration/pg.rs.

Usage: pg_client.py '{"host": ..., "port": ..., "key": ..., "customers": [...],
                      "since_micros": N, "other_tenant": "..."}'

Connects with the key as password (autocommit off, so psycopg sends BEGIN/COMMIT), runs
queries through the simple protocol (no parameters) and the extended protocol (%s
parameters; the same query more than 5 times, which psycopg turns into a named prepared
statement), cancels a long query, checks the Python types of the values and prints what it saw as one JSON
object; the Rust test compares it with `openmonetize query --tenant`. Exits non-zero
(with a traceback) when a type check fails.
"""

import datetime
import decimal
import json
import sys
import threading
import time

import psycopg

args = json.loads(sys.argv[1])
utc = datetime.timezone.utc
epoch = datetime.datetime(1970, 1, 1, tzinfo=utc)


def micros(t):
    assert isinstance(t, datetime.datetime), repr(t)
    assert t.tzinfo is not None and t.utcoffset() == datetime.timedelta(0), repr(t)
    return (t - epoch) // datetime.timedelta(microseconds=1)


def sqlstate(conn, sql, params=None, **kwargs):
    """The SQLSTATE of the error `sql` raises (None when it does not)."""
    try:
        conn.execute(sql, params, **kwargs).fetchall()
        state = None
    except psycopg.Error as e:
        state = e.sqlstate
    conn.rollback()
    return state


out = {}
with psycopg.connect(
    host=args["host"],
    port=args["port"],
    user="someone",
    dbname="openmonetize",
    password=args["key"],
    connect_timeout=10,
) as conn:
    assert not conn.autocommit
    out["server_version"] = conn.info.server_version

    # Simple protocol inside psycopg's implicit transaction (BEGIN ... COMMIT).
    (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
    assert type(count) is int, repr(count)
    out["count"] = count
    out["status_in_transaction"] = conn.info.transaction_status.name
    conn.commit()
    out["status_after_commit"] = conn.info.transaction_status.name

    # Extended protocol: a text parameter; a decimal sum comes back as Decimal.
    customer = args["customers"][0]
    n, total = conn.execute(
        "SELECT count(*), sum(value) FROM events WHERE customer_id = %s", (customer,)
    ).fetchone()
    assert isinstance(total, decimal.Decimal), repr(total)
    out["customer"] = {"count": n, "sum": str(total)}

    # The same parameterized query, once per customer (6+ times): prepared after 5.
    per_customer = []
    for c in args["customers"]:
        cur = conn.execute(
            "SELECT count(*) FROM events WHERE customer_id = %s AND value >= %s",
            (c, decimal.Decimal("0")),
        )
        per_customer.append([c, cur.fetchone()[0]])
    out["per_customer"] = per_customer
    names = getattr(getattr(conn, "_prepared", None), "_names", None)
    out["prepared_statements"] = None if names is None else len(names)
    # And one explicitly prepared (named statement from the first execution).
    cur = conn.execute(
        "SELECT count(*) FROM events WHERE customer_id <> %s", (customer,), prepare=True
    )
    out["explicitly_prepared"] = cur.fetchone()[0]
    conn.commit()

    # Types: numeric -> Decimal, timestamptz -> aware datetime, text -> str.
    value, ts, cust = conn.execute(
        "SELECT value, timestamp, customer_id FROM events ORDER BY id LIMIT 1"
    ).fetchone()
    assert isinstance(value, decimal.Decimal), repr(value)
    assert isinstance(cust, str), repr(cust)
    out["first_row"] = {"value": str(value), "micros": micros(ts), "customer_id": cust}

    # A timestamptz parameter (psycopg sends it in binary).
    since = epoch + datetime.timedelta(microseconds=args["since_micros"])
    (n,) = conn.execute(
        "SELECT count(*) FROM events WHERE timestamp >= %s", (since,)
    ).fetchone()
    out["since_count"] = n

    # bool and int64.
    final, events = conn.execute(
        "SELECT is_final, events FROM usage_windows "
        "ORDER BY customer_id, meter, dimensions, window_size, window_start LIMIT 1"
    ).fetchone()
    assert type(final) is bool, repr(final)
    assert type(events) is int, repr(events)
    out["window"] = {"is_final": final, "events": events}

    # 38 significant digits survive (no float, no 28-digit decimal on the way).
    (big,) = conn.execute(
        "SELECT CAST('-12345678901234567890123456789.123456789' AS DECIMAL(38, 9))"
    ).fetchone()
    assert isinstance(big, decimal.Decimal), repr(big)
    out["big_decimal"] = str(big)

    # Another tenant's rows through a parameter.
    (n,) = conn.execute(
        "SELECT count(*) FROM events WHERE tenant_id = %s", (args["other_tenant"],)
    ).fetchone()
    out["other_tenant_count"] = n
    conn.commit()

    out["errors"] = {
        "unknown_table": sqlstate(conn, "SELECT * FROM nope"),
        "syntax": sqlstate(conn, "SELEC 1"),
        "ddl": sqlstate(conn, "CREATE VIEW v AS SELECT 1"),
        "binary_result": sqlstate(conn, "SELECT count(*) FROM events", binary=True),
        "bad_parameter": sqlstate(
            conn, "SELECT count(*) FROM events WHERE value > %s", ("not a number",)
        ),
    }
    # The session still works after errors.
    (n,) = conn.execute("SELECT count(*) FROM events").fetchone()
    out["count_after_errors"] = n

# A cancel request (libpq's PQcancel, psql's Ctrl-C) stops a long query; the connection
# goes on.
with psycopg.connect(
    host=args["host"],
    port=args["port"],
    user="someone",
    dbname="openmonetize",
    password=args["key"],
    autocommit=True,
) as conn:
    # cancel_safe since psycopg 3.2; cancel before.
    timer = threading.Timer(1.0, getattr(conn, "cancel_safe", conn.cancel))
    timer.start()
    started = time.monotonic()
    out["cancelled"] = sqlstate(
        conn, "SELECT count(*) FROM events a, events b, events c, events d"
    )
    out["cancel_seconds"] = time.monotonic() - started
    timer.join()
    (out["count_after_cancel"],) = conn.execute("SELECT count(*) FROM events").fetchone()

print(json.dumps(out))
