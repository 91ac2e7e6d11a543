#!/usr/bin/env bash
# What the tests of apps/ need beyond .venv:
# * .venv-runtime: the device runner (apps/runtime) installed alone, with its ONNX Runtime,
#   OpenVINO, LiteRT and metrics (pycocotools) extras at the pinned versions and nothing of hrnet-edge or torch
#   (tests/test_runtime_alone.py runs artifacts with it, as a device does);
# * Debian's chromium (Playwright's own browser download is not used) and apps/web's npm
#   packages, pinned by apps/web/package-lock.json (tests/test_web_app.py).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv-runtime/.hrnet-edge-installed
want=$( (cat constraints.txt; find apps/runtime/hrnet_edge_runtime apps/runtime/pyproject.toml -type f \
         \( -name '*.py' -o -name '*.toml' \) | sort | xargs cat) | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "[setup-apps] .venv-runtime is up to date"
else
    echo "[setup-apps] installing apps/runtime alone into .venv-runtime"
    rm -rf .venv-runtime
    "$PY" -m venv .venv-runtime
    .venv-runtime/bin/python -m pip install --quiet --upgrade pip
    # A copy, not editable: what a device gets. The constraints pin the runtimes' versions.
    .venv-runtime/bin/python -m pip install --quiet -c constraints.txt \
        "./apps/runtime[onnxruntime,openvino,litert,metrics]"
    rm -rf apps/runtime/build
    echo "$want" > "$stamp"
fi
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[setup-apps] installing Debian's chromium (apt-get)"
        apt-get update -qq || echo "[setup-apps] apt-get update failed; trying the install anyway" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
            || echo "[setup-apps] apt-get install chromium failed: the browser test will say so" >&2
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        echo "[setup-apps] installing Debian's chromium (sudo apt-get)"
        sudo apt-get update -qq || true
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
            || echo "[setup-apps] apt-get install chromium failed: the browser test will say so" >&2
    else
        echo "[setup-apps] $CHROMIUM is missing and apt-get cannot run here: install chromium" \
             "(Debian: apt-get install chromium) or set CHROMIUM=/path/to/chromium;" \
             "HRNET_EDGE_REQUIRE_BROWSER=0 lets the browser test skip instead of fail" >&2
    fi
fi
if ! command -v npm >/dev/null; then
    echo "[setup-apps] npm is missing: install Node.js 20+ for the web app's test" >&2
    exit 0
fi
stamp=apps/web/node_modules/.hrnet-edge-installed
want=$(sha256sum apps/web/package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "[setup-apps] apps/web/node_modules is up to date"
else
    echo "[setup-apps] npm ci in apps/web"
    (cd apps/web && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$stamp"
fi
