"""INT8 quantization: NNCF post-training init, QAT fine-tuning, checkpoints, stripping.

nncf is imported lazily inside the functions (extra ``hrnet-edge[qat]``), so importing
this package costs nothing when it is not installed.
"""
from quantization.nncf_qat import (
    finetune, freeze_batchnorm, frozen_batchnorm, quantize_model, unfreeze_batchnorm,
)
from quantization.qat_checkpoint import decode_config, encode_config, load_qat, save_qat
from quantization.strip import count_quant_modules, strip_native, strip_to_float, weight_quantizers

__all__ = [
    "quantize_model", "finetune", "freeze_batchnorm", "unfreeze_batchnorm", "frozen_batchnorm",
    "save_qat", "load_qat", "encode_config", "decode_config",
    "strip_to_float", "strip_native", "weight_quantizers", "count_quant_modules",
]
