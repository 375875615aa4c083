#!/usr/bin/env bash
# The main job: set up .venv if needed, then run the whole pipeline with DVC.
# Extra arguments go to `dvc repro` (e.g. `bash run.sh flash` runs up to the flash stage).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
source .venv/bin/activate
dvc repro "$@"
