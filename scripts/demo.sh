#!/usr/bin/env bash
# The README's main command: set up if needed, then run da3_ros on the example data in ../shared.
# Weights cannot be downloaded here, so it runs the real da3-small architecture with RANDOM weights
# (labelled UNTRAINED everywhere); pass MODEL=<hf id | dir> for real weights.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXAMPLES="${DA3_EXAMPLES:-$ROOT/../shared/data/da3_examples}"
MODEL="${MODEL:-random:da3-small}"
OUT="${OUT:-$ROOT/out/demo}"
bash "$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
da3-ros infer --model "$MODEL" "$EXAMPLES/SOH_000.png" "$EXAMPLES/SOH_010.png" --out "$OUT/infer.npz"
