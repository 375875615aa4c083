#!/usr/bin/env bash
# The test suite: set up .venv if needed, then run pytest, one test file per worker on every core
# (pytest-xdist; a file's tests share its fixtures, so they stay on one worker). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
source .venv/bin/activate
python -m pytest -q -rs -n auto --dist loadfile "$@"  # -rs: why a test was skipped
