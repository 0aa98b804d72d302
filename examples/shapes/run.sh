#!/usr/bin/env bash
# The shapes task end to end: write the data, train, score held-out questions with and without images.
# Prints exact match (measured: 95% held out) and the blank-image ablation (near chance: 28%).
#   bash examples/shapes/run.sh [OUTPUT_DIR]      (default runs/shapes)
# Training takes about 10 minutes on an otherwise idle 2-core AMD EPYC VM with no GPU (0.12 s per step of 16);
# time grows with steps x batch size x tokens per sample (roughly in proportion) and with the machine's load
# (50 minutes for 2000 steps on the same VM shared with other jobs). zoo train prints the ETA.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-runs/shapes}"
[ -f "$here/data/train.json" ] || zoo data shapes "$here/data"
zoo train "$here/train.yaml" --output-dir "$out"
zoo eval "$out/final" --data "$here/data/eval.json"
zoo eval "$out/final" --data "$here/data/eval.json" --blank-images
