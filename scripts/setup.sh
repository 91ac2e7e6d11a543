#!/usr/bin/env bash
# Create .venv (once) and install hrnet-edge with every backend at the pinned versions.
# Idempotent: a second run only checks that the installed set still matches.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.hrnet-edge-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "[setup] .venv is up to date"
    exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and exactly pinned: pip takes the CPU build that lies on this disk.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[all,dev]"
# timm, for tests/test_weights.py only (timm's HRNet against hrnet-edge's, random weights):
# timm declares torchvision, and PyPI's torchvision for this torch is a CUDA build that
# does not import beside the CPU torch (docs: TOOLCHAIN.md), so timm comes without its
# dependencies; the others (pyyaml, huggingface_hub, safetensors) are in the stack
# already, and the test stands in for the few torchvision names timm reads at import.
.venv/bin/python -m pip install --quiet --no-deps -c constraints.txt "timm==1.0.31"
# NNCF compiles its C++ fake-quantize kernels on first use (up to 3 minutes on 2 cores,
# longer than NNCF's own 60 s load timeout): build them once here, into
# .venv/torch_extensions (hrnet_edge points TORCH_EXTENSIONS_DIR there), so that no
# other venv of the user shares or rebuilds them.
echo "[setup] building NNCF's CPU extension into .venv/torch_extensions (once)"
NNCF_EXTENSION_LOAD_TIMEOUT=1200 .venv/bin/python -c \
    "import hrnet_edge; from quantization.nncf_extension import ensure_extension, build_dir; ensure_extension(); print('[setup] NNCF extension:', build_dir())"
echo "$want" > "$stamp"
echo "[setup] installed into .venv"
