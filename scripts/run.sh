#!/usr/bin/env bash
# The main job on the built-in default: set up .venv (once), then run the whole
# pipeline (synthetic COCO-keypoints data -> train -> NNCF QAT -> exports -> checks).
# Extra arguments go to `hrnet-edge pipeline` (e.g. --config my.toml --run runs/mine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hrnet-edge pipeline "$@"
