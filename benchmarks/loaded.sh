#!/usr/bin/env bash
# One bench run under load (issue 16): `autotransfer bench --suite SUITE --out OUT` while a second
# `autotransfer fit` runs beside it, restarted until the bench ends, at the same priority.
# Usage: benchmarks/loaded.sh SUITE OUT DATA_FOR_THE_SECOND_FIT [AUTOTRANSFER...]
# (AUTOTRANSFER: the command to run, default .venv/bin/autotransfer)
set -euo pipefail
suite=$1 out=$2 data=$3
shift 3
if [ $# -gt 0 ]; then cli=("$@"); else cli=(.venv/bin/autotransfer); fi
beside=$(mktemp -d)
(
  while true; do
    rm -rf "$beside/run"
    "${cli[@]}" fit "$data" --time-budget 5m --out "$beside/run" >>"$beside/fit.log" 2>&1 || true
  done
) &
load=$!
trap 'kill $load 2>/dev/null; pkill -f "$beside/run" 2>/dev/null || true' EXIT
sleep 20  # the second fit is decoding and timing backbones when the bench starts
echo "load: $(cat /proc/loadavg) (a second fit runs beside the bench; its log: $beside/fit.log)"
"${cli[@]}" bench --suite "$suite" --out "$out"
echo "load at the end: $(cat /proc/loadavg)"
