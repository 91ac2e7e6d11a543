"""From an NNCF QAT model to modules other tools take.

* :func:`strip_native`: NNCF quantizers -> ``torch.ao`` FakeQuantize, for a QDQ ONNX
  export (same outputs up to rare one-step rounding differences).
* :func:`strip_to_float`: a plain float module carrying the QAT-trained weights, for
  targets that quantize with their own tool (ExecuTorch PT2E, TFLite via onnx2tf).

What nncf.strip offers in 3.4 for a QAT (``nncf.quantize``) model, as measured here:
``NATIVE`` works and bakes narrow-range weight quantization into the weights, but
``torch.export`` refuses its FakeQuantize modules (``GuardOnDataDependentSymNode`` on
the ``observer_enabled`` flag); ``IN_PLACE`` raises (it handles weight-compression
hooks only, not QAT's weight pre-hooks) and ``DQ`` raises (it refuses narrow-range
quantizers, which QAT weights use). Hence :func:`strip_to_float` unwraps by itself.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from hrnet_edge.errors import ExportError, unknown_choice
from quantization.nncf_qat import require_nncf, unfreeze_batchnorm

WEIGHT_SOURCES = ("quantized", "latent")


def strip_native(qat_model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """A copy with NNCF quantizers swapped for ``torch.ao`` FakeQuantize.

    Outputs match the NNCF model up to rare one-step rounding differences between the
    two fake-quantize kernels (hrnet_w8_pose 64x64: 5 of 131072 values differed in the
    worst quantizer; heatmaps mean |diff| 1.6e-4, max 0.013-0.019). For a QDQ ONNX,
    ``torch.onnx.export(m, (x,), path, dynamo=False, opset_version=17)`` gives
    QuantizeLinear/DequantizeLinear that ONNX Runtime runs. ``torch.export`` refuses it
    (FakeQuantize reads a flag tensor: a data-dependent guard).
    """
    nncf = require_nncf()
    stripped = nncf.strip(qat_model, do_copy=True, strip_format=nncf.StripFormat.NATIVE,
                          example_input=example_input)
    _convert_shared_quantizers(stripped)
    unfreeze_batchnorm(stripped)
    return stripped.eval()


def _convert_shared_quantizers(model: nn.Module) -> None:
    """Convert the NNCF quantizers ``nncf.strip`` left behind.

    A quantizer shared by several hooks (NNCF gives the inputs of a concatenation one
    unified scale, as in the V2 heads) is listed once by ``named_hooks()``, so NATIVE
    stripping (nncf 3.4) swaps it at one hook and leaves the NNCF module at the others;
    the ONNX export then holds an ``org.openvinotoolkit::FakeQuantize`` that ONNX Runtime
    cannot run. Each shared quantizer becomes one torch FakeQuantize at all its hooks.
    """
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer
    from nncf.torch.quantization.strip import convert_to_torch_fakequantizer

    storage = get_hook_storage(model)
    converted: dict[int, nn.Module] = {}
    for name, module in list(storage.named_hooks(remove_duplicate=False)):
        if isinstance(module, BaseQuantizer):
            if id(module) not in converted:
                converted[id(module)] = convert_to_torch_fakequantizer(module)
            storage.set_submodule(name, converted[id(module)])


def strip_to_float(qat_model: nn.Module, example_input: torch.Tensor,
                   weights: str = "quantized") -> nn.Module:
    """A plain float copy of the QAT model: no NNCF wrapper, hooks or fake quantizers.

    For targets that quantize with their own tool (ExecuTorch PT2E, TFLite via
    onnx2tf): it is accepted by ``torch.export`` and ``torch.onnx.export``. It keeps
    every QAT-trained parameter, including the biases NNCF's fast bias correction
    shifted, so it differs from the original float model even before fine-tuning.

    Args:
        qat_model: the model from :func:`quantize_model` / :func:`load_qat`.
        example_input: one input batch, used to trace which parameter each weight
            quantizer reads.
        weights: ``"quantized"`` bakes each weight quantizer into its weight (values
            on NNCF's INT8 grid, so a per-channel symmetric re-quantizer finds nearly
            the same grid); ``"latent"`` keeps the float weights the optimizer updated.

    Returns:
        A float module in eval mode; only the activation quantization is gone, so it
        differs from ``qat_model`` by about one activation quantization step.
    """
    if weights not in WEIGHT_SOURCES:
        raise unknown_choice("weight source", weights, WEIGHT_SOURCES)
    require_nncf()
    model = copy.deepcopy(qat_model).eval()
    if weights == "quantized":
        _bake_weight_quantizers(model, example_input)
    _unwrap(model)
    unfreeze_batchnorm(model)
    return model


def weight_quantizers(qat_model: nn.Module, example_input: torch.Tensor) -> dict[str, nn.Module]:
    """Map each quantized parameter name (``"backbone.stem.0.0.weight"``) to its quantizer."""
    from nncf.torch.function_hook.hook_storage import decode_hook_name
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.model_graph_manager import get_const_node
    from nncf.torch.quantization.layers import BaseQuantizer

    # The same graph walk nncf.strip(NATIVE) does: a weight quantizer is a pre-hook on
    # an op's weight port, and the graph names the constant feeding that port.
    graph = build_nncf_graph(qat_model, example_input)
    found = {}
    for hook_name, quantizer in get_hook_storage(qat_model).named_hooks():
        hook_type, op_name, port = decode_hook_name(hook_name)
        if hook_type != "pre_hooks" or not isinstance(quantizer, BaseQuantizer):
            continue
        const = get_const_node(graph.get_node_by_name(op_name), port, graph)
        if const is not None:
            found[const.layer_attributes.name] = quantizer
    return found


@torch.no_grad()
def _bake_weight_quantizers(model: nn.Module, example_input: torch.Tensor) -> None:
    # buffers too: a fixed weight (the detection pyramid's pooling convolution) is a
    # constant NNCF quantizes like a parameter
    params = {**dict(model.named_buffers()), **dict(model.named_parameters())}
    for name, quantizer in weight_quantizers(model, example_input).items():
        params[name].copy_(quantizer(params[name].detach()))


def _unwrap(model: nn.Module) -> None:
    """Undo ``nncf.torch.wrap_model`` in place (its three documented changes)."""
    from nncf.torch.function_hook.wrapper import ATR_HOOK_STORAGE, is_wrapped

    model.__dict__.pop("forward", None)  # the instance ForwardWithHooks; class forward returns
    model.__dict__.pop("_replicate_for_data_parallel", None)
    model._modules.pop(ATR_HOOK_STORAGE, None)
    if is_wrapped(model) or any(_is_quant_module(m) for m in model.modules()):
        raise ExportError("could not remove the NNCF wrapper: this nncf version wraps models differently "
                          "from 3.4 (see nncf.torch.wrap_model)")


def _is_quant_module(m: nn.Module) -> bool:
    from torch.ao.quantization import FakeQuantizeBase

    return isinstance(m, FakeQuantizeBase) or type(m).__module__.startswith("nncf.")


def count_quant_modules(model: nn.Module) -> int:
    """Number of NNCF modules and torch.ao fake quantizers in ``model`` (0 when plain float)."""
    return sum(1 for m in model.modules() if _is_quant_module(m))

