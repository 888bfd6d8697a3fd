"""Reads an OpenMonetize data directory with pyarrow, independently of our own reader.

Usage: python check_parquet.py DATA_DIR

Opens the newest commit record, reads every Parquet file it names with pyarrow, checks
that the row counts match the commit record and that money/usage columns are
decimal128(38, 9) and times timestamp[us, tz=UTC], and prints one JSON object:
{"tables": {"usage_windows": {"rows": N, "value_type": "decimal128(38, 9)", ...}, ...},
 "usage_value_sum": "..."}
"""
import json
import pathlib
import sys

import pyarrow as pa
import pyarrow.parquet as pq

DECIMAL = pa.decimal128(38, 9)
TIMESTAMP = pa.timestamp("us", tz="UTC")


def main(root: pathlib.Path) -> None:
    commits = sorted((root / "_commits").glob("*.json"))
    if not commits:
        sys.exit(f"no commit record under {root}")
    record = json.loads(commits[-1].read_text())
    out = {"epoch": record["epoch"], "tables": {}}
    usage_sum = None
    for table, files in record["tables"].items():
        rows = 0
        types = {}
        for entry in files.values():
            t = pq.read_table(root / entry["path"])
            if t.num_rows != entry["rows"]:
                sys.exit(f"{entry['path']}: pyarrow reads {t.num_rows} rows, commit record says {entry['rows']}")
            rows += t.num_rows
            for field in t.schema:
                types[field.name] = str(field.type)
                if field.name in ("value",) and field.type != DECIMAL:
                    sys.exit(f"{entry['path']}: column value is {field.type}, expected {DECIMAL}")
                if field.name in ("timestamp", "window_start", "window_end", "ingested_at", "watermark") and field.type != TIMESTAMP:
                    sys.exit(f"{entry['path']}: column {field.name} is {field.type}, expected {TIMESTAMP}")
            if table == "usage_windows":
                s = pa.compute.sum(t.column("value")).as_py()
                usage_sum = s if usage_sum is None else usage_sum + s
        out["tables"][table] = {"rows": rows, "types": types}
    out["usage_value_sum"] = None if usage_sum is None else f"{usage_sum:.9f}"
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
