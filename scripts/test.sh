#!/usr/bin/env bash
# Set up .venv (once), the runner alone in .venv-runtime and the web app's browser test
# (chromium, npm packages), then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_apps.sh
# The browser test fails (not skips) when chromium or the npm packages are missing;
# HRNET_EDGE_REQUIRE_BROWSER=0 turns that into a skip on machines that cannot have them.
export HRNET_EDGE_REQUIRE_BROWSER=${HRNET_EDGE_REQUIRE_BROWSER:-1}
# Two worker processes (pytest-xdist), one torch thread each: conversions and checks are
# mostly one-threaded Python, so two at once fill both cores. Modules that share a run
# stay in one worker, the longest first (tests/conftest.py). HRNET_EDGE_TEST_WORKERS=0 runs
# in one process.
WORKERS=${HRNET_EDGE_TEST_WORKERS:-2}
exec .venv/bin/python -m pytest -n "$WORKERS" --dist loadgroup --no-loadscope-reorder --durations=30 "$@"
