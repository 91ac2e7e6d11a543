"""The HRNet model family."""
from hrnet_edge.models.hrnet import HRNet
from hrnet_edge.models.registry import count_macs, count_params, create_model, list_models, model_stats

__all__ = ["HRNet", "create_model", "list_models", "count_params", "count_macs", "model_stats"]
