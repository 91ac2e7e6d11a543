"""hrnet-edge: HRNet from training to checked on-device artifacts."""
import os as _os

# Before torch loads OpenMP: spinning waiters (the default) made torch and NNCF's
# extension, two OpenMP users in one process, starve each other on 2 cores (a 0.1 s
# forward took 6 s). Passive waiting costs little; a user's own setting is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from hrnet_edge.config import ModelConfig, get_config
from hrnet_edge.models import HRNet, count_macs, count_params, create_model, list_models, model_stats

__version__ = "0.1.0"
__all__ = ["HRNet", "ModelConfig", "get_config", "create_model", "list_models",
           "count_params", "count_macs", "model_stats", "__version__"]
