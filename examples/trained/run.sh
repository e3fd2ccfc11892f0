#!/usr/bin/env bash
# The worked example of a model you already trained, as CI runs it (from the repository
# root): make images, train a model in plain PyTorch (train.py), then benchmark what int8,
# structured pruning + fine-tune and distillation do to exactly that model.
#   bash examples/trained/run.sh [OUT]
set -euo pipefail
OUT=${1:-results/trained_example}
BIN=${BIN:-.venv/bin}
HERE=examples/trained
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ -d "$OUT/data" ] || $BIN/python $HERE/make_data.py "$OUT/data"
[ -f "$OUT/model.pth" ] || $BIN/python $HERE/train.py "$OUT/data" "$OUT/model.pth" \
  | tee "$OUT/train.json"
# the suite, pointed at this run's images and weights; my_model.py beside it (its plugin)
sed -e "s#DATA#$OUT/data#g" -e "s#WEIGHTS#$OUT/model.pth#g" $HERE/suite.yaml > "$OUT/suite.yaml"
cp $HERE/my_model.py "$OUT/"
$BIN/modelopt run "$OUT/suite.yaml" --out "$OUT/run" -q
$BIN/modelopt report "$OUT/run" --out "$OUT/report"
