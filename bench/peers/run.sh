#!/usr/bin/env bash
# The peer benchmark (issue #7): the same workload on OpenMonetize, DuckDB, Pathway and
# Bytewax, side by side. bench/peers/README.md explains the workload and the figures.
#
#   bench/peers/run.sh                          # 10M events, 10,000 customers, workers 1 and 2
#   bench/peers/run.sh --events 200000          # a quick run
#   bench/peers/run.sh --events 200000 --engines openmonetize,duckdb --workers 2 --late ''
#
# Options (all optional): --events N (10000000), --customers N (10000), --workers LIST
# (1,2), --engines LIST (openmonetize,duckdb,pathway,bytewax), --engine-workers
# ENGINE=W[+W],... (per-engine worker counts, e.g. bytewax=1), --late LIST (engines whose
# late-event cost to measure: openmonetize,duckdb,pathway; '' for none), --late-base N
# (events loaded before the late event; default all).
#
# Installs once, under $OM_CACHE (default ~/.cache/openmonetize): a venv peers-venv with
# pinned pathway, bytewax, duckdb and pyarrow from PyPI. Uses the release binary
# $OM_CACHE/target/release/openmonetize (built with cargo when missing; OM_BIN=PATH to use
# another). The events file is generated once per (events, customers) into
# $OM_CACHE/bench-peers/ and reused; run outputs go to $OM_CACHE/bench-peers/run/.
set -euo pipefail
cd "$(dirname "$0")/../.."

EVENTS=10000000
CUSTOMERS=10000
WORKERS=1,2
ENGINES=openmonetize,duckdb,pathway,bytewax
LATE=openmonetize,duckdb,pathway
LATE_BASE=0
ENGINE_WORKERS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --events) EVENTS="$2"; shift 2 ;;
    --customers) CUSTOMERS="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --engines) ENGINES="$2"; shift 2 ;;
    --engine-workers) ENGINE_WORKERS="$2"; shift 2 ;;
    --late) LATE="$2"; shift 2 ;;
    --late-base) LATE_BASE="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

OM_CACHE="${OM_CACHE:-$HOME/.cache/openmonetize}"
VENV="$OM_CACHE/peers-venv"
WORK="$OM_CACHE/bench-peers"
mkdir -p "$WORK"

if ! "$VENV/bin/python" -c 'import pathway, bytewax, duckdb, pyarrow' 2>/dev/null; then
  echo "installing pathway, bytewax, duckdb, pyarrow into $VENV (once)..." >&2
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    'pathway==0.33.0' 'bytewax==0.21.1' 'duckdb==2.0.1' 'pyarrow>=14'
fi

# Peak RSS is measured with GNU time (Debian package `time`).
if [ ! -x /usr/bin/time ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -qq time
fi

BIN="${OM_BIN:-$OM_CACHE/target/release/openmonetize}"
if [ ! -x "$BIN" ]; then
  echo "building the release binary (cargo build --release -p openmonetize)..." >&2
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$OM_CACHE/target}" cargo build --release --quiet -p openmonetize --bin openmonetize
  BIN="${CARGO_TARGET_DIR:-$OM_CACHE/target}/release/openmonetize"
fi

INPUT="$WORK/events-$EVENTS-$CUSTOMERS.jsonl"
if [ ! -s "$INPUT" ]; then
  echo "generating $EVENTS events for $CUSTOMERS customers into $INPUT..." >&2
  "$BIN" gen --events "$EVENTS" --customers "$CUSTOMERS" --seed 42 --days 7 --out "$INPUT.tmp"
  mv "$INPUT.tmp" "$INPUT"
fi

echo "openmonetize: $BIN ($("$BIN" --version)); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec "$VENV/bin/python" bench/peers/run.py --input "$INPUT" --events "$EVENTS" --bin "$BIN" \
  --workdir "$WORK/run" --workers "$WORKERS" --engines "$ENGINES" --engine-workers "$ENGINE_WORKERS" --late "$LATE" --late-base "$LATE_BASE"
