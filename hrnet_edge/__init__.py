"""hrnet-edge: HRNet from training to checked on-device artifacts."""
# OpenMP waiting: torch and NNCF's C++ extension each bring an OpenMP runtime, and with
# both spinning after their parallel regions they starve each other on small machines
# (a 0.1 s forward took 6 s on 2 cores). Passive waiting cures that but makes plain
# torch training 2x slower, so it is set only for the processes that load NNCF (the QAT
# stage and the INT8 checks run in child processes with OMP_WAIT_POLICY=PASSIVE; see
# hrnet_edge.omp). It has to be in the environment before torch is imported.
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
