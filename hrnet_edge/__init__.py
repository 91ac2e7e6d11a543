"""hrnet-edge: HRNet from training to checked on-device artifacts."""
import os as _os

# OpenMP waiting, read when torch loads its OpenMP runtime (so it must come first).
# torch and NNCF's C++ extension each bring a runtime; with libgomp's default spin
# (300k rounds after every parallel region) they starved each other on 2 cores: a 0.1 s
# NNCF forward took 6 s. OMP_WAIT_POLICY=PASSIVE cures that but made training 2x slower
# (0.30 vs 0.14 s per W8 step at 128x96, batch 16), and the QAT stage 2.3x slower
# (205 vs 90 s). A short spin of 10k rounds trains as fast as the default and kept
# the QAT stage healthy. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "10000")
# NNCF's compiled kernels are built into this venv, not into a cache shared by all venvs.
from hrnet_edge.deps import configure_extensions_dir as _configure_extensions_dir

_configure_extensions_dir()
# The model exports load torch on first use, so that tools which only read a run or run
# an exported artifact (the checks of ONNX, OpenVINO and TFLite files) never import it.
from hrnet_edge.config import ModelConfig, get_config

_MODEL_EXPORTS = ("HRNet", "create_model", "list_models", "count_params", "count_macs", "model_stats")


def __getattr__(name: str):
    if name in _MODEL_EXPORTS:
        from hrnet_edge import models

        return getattr(models, name)
    raise AttributeError(f"module 'hrnet_edge' has no attribute {name!r}")


__version__ = "0.1.0"
__all__ = ["HRNet", "ModelConfig", "get_config", "create_model", "list_models",
           "count_params", "count_macs", "model_stats", "__version__"]
