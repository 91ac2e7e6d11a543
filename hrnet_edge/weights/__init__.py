"""Published HRNet weights into hrnet-edge models: key maps as data, one per source.

``load_weights(model, "hrnet_w32.safetensors", parts=("backbone",))`` loads timm's
ImageNet backbone into any head of that width; a mismatch raises
:class:`WeightsMismatch` naming the missing and unexpected keys and the shapes.
"""
from hrnet_edge.weights.keymap import SOURCES, KeyMap, get_map
from hrnet_edge.weights.load import (
    PARTS, LoadReport, WeightsError, WeightsMismatch, detect_source, load_weights, map_state, read_state_dict,
)

__all__ = ["PARTS", "SOURCES", "KeyMap", "LoadReport", "WeightsError", "WeightsMismatch", "detect_source",
           "get_map", "load_weights", "map_state", "read_state_dict"]
