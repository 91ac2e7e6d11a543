"""hrnet-edge: HRNet from training to checked on-device artifacts."""
from hrnet_edge.config import ModelConfig, get_config
from hrnet_edge.models import HRNet, count_macs, count_params, create_model, list_models, model_stats

__version__ = "0.1.0"
__all__ = ["HRNet", "ModelConfig", "get_config", "create_model", "list_models",
           "count_params", "count_macs", "model_stats", "__version__"]
