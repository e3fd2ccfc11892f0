#!/usr/bin/env bash
# The whole worked example, as CI runs it: data -> run -> report -> compare -> export.
#   bash examples/byo/run.sh [OUT]        (from the repository root)
set -euo pipefail
OUT=${1:-results/byo}
BIN=${BIN:-.venv/bin}
$BIN/python examples/byo/make_data.py examples/byo/data
for suite in images table; do
  $BIN/modelopt run examples/byo/$suite.yaml --out "$OUT/$suite" -q
done
$BIN/modelopt report "$OUT/images" "$OUT/table" --out "$OUT/report"
# a second run of the table suite (another seed list would do too) as the "current" side
$BIN/modelopt run examples/byo/table.yaml --out "$OUT/table-again" -q
$BIN/modelopt compare "$OUT/table" "$OUT/table-again" --fail-on accuracy:2 --no-retime \
  --out "$OUT/compare.md"
$BIN/modelopt export "$OUT/images" "$OUT/table" --out "$OUT/export"
