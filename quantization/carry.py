"""Carry the activation ranges NNCF QAT learned into a PT2E-prepared graph.

ExecuTorch's INT8 route quantizes with PT2E (``prepare_pt2e`` with XNNPACK's quantizer,
observers, ``convert_pt2e``), whose observers would re-calibrate every activation range
from a few images and so throw away what QAT learned. :func:`carry_qat_ranges` finds,
for each PT2E activation observer, the NNCF activation quantizer that reads the same
tensor, and makes the observer report that quantizer's scale and zero point.

Which tensors are the same is decided by value, not by name: the two graphs name
things differently (NNCF's op names, ``torch.export``'s node names), and PT2E folds
BatchNorm into the convolutions. Both models run the same images in float (the NNCF
model with its activation quantizers passed through and its weight quantizers on, the
PT2E graph with observers, which do not change values); an observer's input and a
quantizer's input are the same tensor when the shapes agree and the values agree to
float rounding. Observers without a match (tensors QAT did not quantize, for example
the model input before normalization) keep their calibrated range; the returned facts
count both, so an artifact's metadata says how much QAT it kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from quantization.nncf_qat import require_nncf

# Two captured tensors are the same when max|a - b| <= ATOL_REL * max|b| + 1e-6:
# conv + BatchNorm vs the folded conv differ by float rounding (~1e-6 relative);
# distinct tensors of one shape differ by far more.
ATOL_REL = 1e-3


@dataclass
class CarryResult:
    """What :func:`carry_qat_ranges` did."""

    carried: int = 0  # activation observers now using a QAT range
    calibrated: int = 0  # activation observers left with their calibrated range
    qat_quantizers: int = 0  # NNCF activation quantizers in the QAT model
    unused_quantizers: int = 0  # of those, matched to no observer

    def facts(self) -> dict:
        return {"activation_ranges_from_qat": self.carried,
                "activation_ranges_calibrated": self.calibrated,
                "qat_activation_quantizers": self.qat_quantizers,
                "qat_activation_quantizers_unmatched": self.unused_quantizers}


def _activation_quantizers(qat_model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The NNCF activation quantizers (every quantizer hook that is not a weight's)."""
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer

    from quantization.strip import weight_quantizers

    weights = {id(q) for q in weight_quantizers(qat_model, example).values()}
    seen, found = set(), []
    for _, module in get_hook_storage(qat_model).named_hooks(remove_duplicate=False):
        if isinstance(module, BaseQuantizer) and id(module) not in weights and id(module) not in seen:
            seen.add(id(module))
            found.append(module)
    return found


def _qat_range(quantizer: nn.Module) -> tuple[float, float]:
    """The float interval [low, high] an NNCF 8-bit per-tensor quantizer represents."""
    qmin, qmax, scale, zero = quantizer.get_parameters_for_torch_fq()
    scale = float(torch.as_tensor(scale).reshape(-1)[0])
    zero = int(torch.as_tensor(zero).reshape(-1)[0])
    return (qmin - zero) * scale, (qmax - zero) * scale


def _capture(modules: dict[str, nn.Module], run) -> dict[str, list[torch.Tensor]]:
    """Run ``run()`` and record every input each module in ``modules`` is called with."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    handles = [m.register_forward_pre_hook(lambda _m, args, n=name: seen[n].append(args[0].detach().clone()))
               for name, m in modules.items()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    scale = float(b.abs().max())
    return float((a - b).abs().max()) <= ATOL_REL * scale + 1e-6


@torch.no_grad()
def carry_qat_ranges(prepared: nn.Module, qat_model: nn.Module, images: torch.Tensor,
                     prepared_images: torch.Tensor | None = None) -> CarryResult:
    """Make each activation observer of ``prepared`` report the QAT range of its tensor.

    Call it after the calibration passes and before ``convert_pt2e``.

    Args:
        prepared: the GraphModule from ``prepare_pt2e`` (its observers).
        qat_model: the NNCF QAT model whose float weights ``prepared`` was exported from
            (weights baked to NNCF's grid, see :func:`quantization.strip.strip_to_float`).
        images: a small NCHW batch (2 to 4 images) both models run for the matching.
        prepared_images: the same images in the form ``prepared`` takes, when it differs
            (a uint8 NHWC front); None: ``images``.

    Returns:
        How many observers now carry a QAT range and how many kept their calibration.
    """
    from torchao.quantization.pt2e import ObserverBase

    observers = {name: m for name, m in prepared.named_modules()
                 if isinstance(m, ObserverBase) and m.qscheme in (torch.per_tensor_affine, torch.per_tensor_symmetric)}
    qat = qat_activation_tensors(qat_model, images)
    feed = images if prepared_images is None else prepared_images
    o_inputs = _capture(observers, lambda: prepared(feed))

    result = CarryResult(qat_quantizers=len(qat))
    used: set[int] = set()
    for oname, obs in observers.items():
        tensors = o_inputs[oname]
        if not tensors:  # an observer no forward pass reaches
            continue
        matched = match_ranges(tensors, qat)
        if not matched:
            result.calibrated += 1
            continue
        low, high = union_range(qat[i][0] for i in matched)
        _fix_qparams(obs, low, high)
        result.carried += 1
        used.update(matched)
    result.unused_quantizers = len(qat) - len(used)
    return result


@torch.no_grad()
def qat_activation_tensors(qat_model: nn.Module, images: torch.Tensor
                           ) -> list[tuple[tuple[float, float], list[torch.Tensor]]]:
    """Each NNCF activation quantizer's range and the float tensors it reads on ``images``.

    The model runs with its activation quantizers passed through (so every tensor is
    the float value a converted graph would compute before quantizing it) and its weight
    quantizers on (the weights a stripped float model carries, see
    :func:`quantization.strip.strip_to_float`).
    """
    require_nncf()
    quantizers = _activation_quantizers(qat_model, images[:1])
    named = {f"q{i}": q for i, q in enumerate(quantizers)}
    was_enabled = {name: q.is_enabled_quantization() for name, q in named.items()}
    training = qat_model.training
    for q in quantizers:
        q.disable_quantization()
    qat_model.eval()
    try:
        seen = _capture(named, lambda: qat_model(images))
    finally:
        for name, q in named.items():
            if was_enabled[name]:
                q.enable_quantization()
        qat_model.train(training)
    return [(_qat_range(q), seen[name]) for name, q in named.items()]


def match_ranges(tensors: list[torch.Tensor], qat: list[tuple[tuple[float, float], list[torch.Tensor]]]
                 ) -> list[int]:
    """Indices into ``qat`` of the quantizers that read one of ``tensors``."""
    return [i for i, (_, qts) in enumerate(qat) if any(_same(t, qt) for t in tensors for qt in qts)]


def union_range(ranges) -> tuple[float, float]:
    """The smallest interval holding every range and zero (zero must be exact)."""
    lows, highs = zip(*ranges)
    return min(min(lows), 0.0), max(max(highs), 0.0)


def affine_qparams(low: float, high: float, qmin: int = -128, qmax: int = 127) -> tuple[float, int]:
    """(scale, zero point) that put [low, high] on the integer grid qmin..qmax."""
    scale = max((high - low) / (qmax - qmin), 1e-12)
    return scale, min(max(int(round(qmin - low / scale)), qmin), qmax)


def _fix_qparams(obs: nn.Module, low: float, high: float) -> None:
    """Make ``obs.calculate_qparams()`` give the affine qparams of [low, high] on its grid."""
    qmin, qmax = int(obs.quant_min), int(obs.quant_max)
    if obs.qscheme == torch.per_tensor_symmetric:
        bound = max(-low, high)
        scale, zero = max(2 * bound / (qmax - qmin), 1e-12), (qmin + qmax + 1) // 2
    else:
        scale, zero = affine_qparams(low, high, qmin, qmax)
    qparams = (torch.tensor([scale], dtype=torch.float32), torch.tensor([zero], dtype=torch.int32))
    obs.calculate_qparams = lambda: qparams  # read by convert_pt2e
