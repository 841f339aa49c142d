#!/usr/bin/env bash
# The README's main command: set up if needed, then run the node on the example data in ../shared as a
# 3-camera rig (rig_player -> depth_node -> recorder), print a summary and write pictures to out/demo.
# Weights cannot be downloaded here, so it runs the real da3-small architecture with RANDOM weights
# (labelled UNTRAINED everywhere); MODEL=<hf id | dir> runs real weights.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXAMPLES="${DA3_EXAMPLES:-$ROOT/../shared/data/da3_examples}"
bash "$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
exec da3-ros demo --examples "$EXAMPLES" --model "${MODEL:-random:da3-small}" --out "${OUT:-$ROOT/out/demo}" "$@"
