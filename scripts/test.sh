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
exec .venv/bin/python -m pytest "$@"
