"""NNCF INT8 quantization-aware training: post-training init, fine-tuning, stripping.

The flow (NNCF 3.4, torch backend)::

    qm = quantize_model(model, calibration)          # nncf.quantize: fake quantizers + ranges
    finetune(qm, loader, loss_fn, epochs=2)          # QAT, BatchNorm statistics frozen
    save_qat(qm, directory, x)                       # see qat_checkpoint.py
    ov.convert_model(qm, example_input=x)            # INT8 OpenVINO IR (FakeQuantize ops)
    strip_native(qm, x)                              # strip.py: torch.ao FakeQuantize -> QDQ ONNX
    strip_to_float(qm, x)                            # strip.py: plain float module

Nothing here knows the task: a model is any ``nn.Module`` taking one NCHW image tensor.

Where the quantizers go. NNCF keeps the in-graph normalization ``(x - mean) * inv_std``
in float (elementwise ops with constants get no quantizer of their own) and puts one
activation quantizer on its output, which is the first convolution's input. Ignoring
the normalization ops (``ignored_scope=["normalize/.*"]``) changes nothing: that
quantizer belongs to the convolution. Its cost was measured on a trained
hrnet_w8_pose at 64x64: mean |int8 - fp32| on the heatmaps 0.00162 with it and 0.00160
with it disabled, so the default placement is kept.
"""
from __future__ import annotations

import contextlib
import itertools
import os
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from hrnet_edge.deps import require
from hrnet_edge.errors import ConfigError, DataError, unknown_choice

PRESETS = ("performance", "mixed")
TARGET_DEVICES = ("any", "cpu", "gpu", "npu")
OPTIMIZERS = ("adam", "adamw", "sgd")


def require_nncf():
    """Import nncf lazily, with a compile timeout that fits a small machine.

    NNCF JIT-compiles its C++ fake-quantize kernels on first use and gives up after
    60 s (``NNCF_EXTENSION_LOAD_TIMEOUT``); on a 2-core machine the build took about
    3 minutes, so the default made the first QAT run fail. Its pure-torch fallback goes
    through torch.compile and was slower still (77 s for the first backward). A value
    the user has set is kept. The extension is loaded here, once per process
    (:func:`quantization.nncf_extension.ensure_extension`).
    """
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "900")
    nncf = require("nncf", "qat")
    # Built into the venv, and a build lock left by a killed process is cleared first
    # (it made every later NNCF process wait forever, silently).
    from quantization.nncf_extension import ensure_extension

    ensure_extension()
    return nncf


def quantize_model(
    model: nn.Module,
    calibration: np.ndarray | torch.Tensor,
    subset_size: int | None = None,
    preset: str = "performance",
    target_device: str = "cpu",
    ignored_scope: Sequence[str] | Any | None = None,
    batch_size: int = 1,
    bias_correction: bool = True,
) -> nn.Module:
    """Insert INT8 fake quantizers with ranges calibrated on images (``nncf.quantize``).

    The result is a torch module (a copy; ``model`` is not changed) that runs in
    simulated INT8, can be fine-tuned with :func:`finetune` and converted by OpenVINO.

    Args:
        model: float model taking one NCHW float tensor.
        calibration: images (N, C, H, W) float, as the model takes them (0..1 when the
            model normalizes in-graph).
        subset_size: how many of the images to use (all when None).
        preset: ``"performance"`` (symmetric activations) or ``"mixed"`` (asymmetric).
        target_device: ``"cpu"`` (OpenVINO CPU rules), ``"any"``, ``"gpu"``, ``"npu"``.
        ignored_scope: ops to keep in float: regex patterns over NNCF op names
            (e.g. ``["head/.*"]``) or an ``nncf.IgnoredScope``.
        batch_size: images per calibration forward; above 1 statistics stay per image
            (``batchwise_statistics``).
        bias_correction: run NNCF's fast bias correction after the range
            initialisation (NNCF's default; what it cost the detection head is
            measured at ``DetTask.qat_defaults``).

    Returns:
        The quantized model, in eval mode.

    Raises:
        ConfigError: a bad preset, device, scope, size or calibration array.
        MissingDependency: nncf is not installed.
    """
    nncf = require_nncf()
    images = _calibration_tensor(calibration, model)
    n = len(images) if subset_size is None else int(subset_size)
    if not 1 <= n <= len(images):
        raise ConfigError(f"subset_size must be in 1..{len(images)} (the calibration images), "
                          f"got {subset_size}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if preset not in PRESETS:
        raise unknown_choice("quantization preset", preset, PRESETS)
    if target_device not in TARGET_DEVICES:
        raise unknown_choice("target device", target_device, TARGET_DEVICES)
    device = _device_of(model)
    items = [images[i:i + batch_size] for i in range(0, n, batch_size)]
    advanced = None
    if batch_size > 1 or not bias_correction:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

        # batch_size > 1: otherwise NNCF reduces each batch as if it were one image
        advanced = AdvancedQuantizationParameters(batchwise_statistics=True if batch_size > 1 else None,
                                                  disable_bias_correction=not bias_correction)
    was_training = model.training
    model.eval()  # calibrate with BatchNorm running statistics, as deployed
    try:
        qm = nncf.quantize(
            model, nncf.Dataset(items, lambda t: t.to(device)), subset_size=len(items),
            preset=getattr(nncf.QuantizationPreset, preset.upper()),
            target_device=getattr(nncf.TargetDevice, target_device.upper()),
            ignored_scope=_ignored_scope(nncf, ignored_scope), advanced_parameters=advanced)
    except nncf.ValidationError as exc:  # an ignored-scope pattern that matches nothing
        raise ConfigError(f"nncf.quantize rejected the setup: {str(exc).strip()} (ignored_scope "
                          "patterns are regexes over NNCF op names like 'head/final/conv2d/0')") from exc
    finally:
        model.train(was_training)
    return qm.eval()


def _calibration_tensor(calibration: np.ndarray | torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Validate calibration images and return them as a float32 CPU tensor."""
    if isinstance(calibration, np.ndarray):
        calibration = torch.from_numpy(np.ascontiguousarray(calibration))
    if not isinstance(calibration, torch.Tensor):
        raise ConfigError("calibration must be a numpy array or torch tensor, "
                          f"got {type(calibration).__name__}")
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ConfigError("calibration must be (N, C, H, W) with N >= 1, "
                          f"got shape {tuple(calibration.shape)}")
    if not calibration.is_floating_point():
        raise ConfigError(f"calibration must be float images (0..1 when the model normalizes in-graph), "
                          f"got dtype {calibration.dtype}")
    calibration = calibration.detach().to("cpu", torch.float32)
    if not torch.isfinite(calibration).all():
        raise ConfigError("calibration images contain NaN or inf")
    cfg = getattr(model, "cfg", None)
    if getattr(cfg, "normalize_in_graph", False) and (calibration.min() < 0 or calibration.max() > 1):
        raise ConfigError(f"the model normalizes in-graph and takes images in 0..1; calibration spans "
                          f"{calibration.min().item():.3g}..{calibration.max().item():.3g}")
    return calibration


def _ignored_scope(nncf, scope):
    if scope is None or isinstance(scope, nncf.IgnoredScope):
        return scope
    if isinstance(scope, str):  # a lone string would otherwise be split into characters
        scope = [scope]
    return nncf.IgnoredScope(patterns=list(scope))


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# --- BatchNorm freezing ---------------------------------------------------------------

def _keep_eval(module: nn.Module, args: Any) -> None:
    """Forward pre-hook: run BatchNorm with its running statistics, whatever train() said."""
    module.training = False


def freeze_batchnorm(module: nn.Module) -> list[nn.Module]:
    """Keep every BatchNorm layer of ``module`` in eval mode from now on.

    A forward pre-hook switches each BatchNorm to eval right before it runs, so the
    freeze survives ``module.train()`` (which the training loop calls) and deep copies.
    Running statistics stay fixed and normalization uses them, as in the deployed
    graph the quantizer ranges were calibrated for; the affine weight and bias still
    train. Why: a train-mode step on a small batch moved the output by 0.15 through the
    statistics alone (docs/TOOLCHAIN.md).

    Returns:
        The BatchNorm layers that were newly frozen (already frozen ones are skipped).
    """
    frozen = []
    for m in module.modules():
        if isinstance(m, _BatchNorm) and not _is_frozen(m):
            m.register_forward_pre_hook(_keep_eval)
            m.train(False)
            frozen.append(m)
    return frozen


def unfreeze_batchnorm(module: nn.Module) -> None:
    """Undo :func:`freeze_batchnorm` on every BatchNorm layer of ``module``."""
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            _unfreeze_one(m)


@contextlib.contextmanager
def frozen_batchnorm(module: nn.Module) -> Iterator[nn.Module]:
    """Context manager: BatchNorm frozen inside; layers it froze are released on exit."""
    frozen = freeze_batchnorm(module)
    try:
        yield module
    finally:
        for m in frozen:
            _unfreeze_one(m)


def _is_frozen(bn: nn.Module) -> bool:
    return any(h is _keep_eval for h in bn._forward_pre_hooks.values())


def _unfreeze_one(bn: nn.Module) -> None:
    for key in [k for k, h in bn._forward_pre_hooks.items() if h is _keep_eval]:
        del bn._forward_pre_hooks[key]


# --- fine-tuning ----------------------------------------------------------------------

def finetune(
    qat_model: nn.Module,
    loader: Iterable,
    loss_fn: Callable[[Any, tuple], torch.Tensor],
    epochs: int = 1,
    lr: float = 1e-5,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    steps_per_epoch: int | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, float], None] | None = None,
    before_step: Callable[[], None] | None = None,
) -> list[float]:
    """Quantization-aware fine-tuning with BatchNorm statistics frozen.

    Weights, BatchNorm affine parameters and the quantizer scales all train (NNCF's
    scales are parameters). NNCF's own examples use Adam at 1e-5 for a few epochs.

    Args:
        qat_model: the model from :func:`quantize_model` (trained in place).
        loader: yields batches ``(images, *rest)``; tensors are moved to the model's
            device before ``loss_fn`` sees them.
        loss_fn: ``loss_fn(outputs, batch) -> scalar tensor``.
        epochs: passes over ``loader``.
        lr: learning rate.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: passed to the optimizer.
        steps_per_epoch: stop each epoch after this many batches (all when None).
        progress: show a tqdm bar with the running loss.
        on_epoch_end: called as ``on_epoch_end(epoch, mean_loss)``, epoch from 1.
        before_step: called before every step (the pipeline resizes the thread pool
            there when the process beside it ends).

    Returns:
        The mean training loss of each epoch.

    Raises:
        ConfigError: bad epochs, lr or optimizer name.
        DataError: the loader yielded no batch.
        FloatingPointError: the loss became NaN or inf.
    """
    from tqdm.auto import tqdm

    if epochs < 1 or not lr > 0 or (steps_per_epoch is not None and steps_per_epoch < 1):
        raise ConfigError(f"epochs and steps_per_epoch must be >= 1 and lr > 0, got epochs={epochs}, "
                          f"steps_per_epoch={steps_per_epoch}, lr={lr}")
    opt = _make_optimizer(optimizer, [p for p in qat_model.parameters() if p.requires_grad], lr, weight_decay)
    device = _device_of(qat_model)
    was_training = qat_model.training
    history: list[float] = []
    with frozen_batchnorm(qat_model):
        qat_model.train()
        try:
            for epoch in range(1, epochs + 1):
                total = steps_per_epoch if steps_per_epoch is not None else _len_or_none(loader)
                bar = tqdm(itertools.islice(loader, steps_per_epoch), desc=f"QAT {epoch}/{epochs}",
                           total=total, disable=not progress, leave=False)
                history.append(_run_epoch(qat_model, bar, loss_fn, opt, device, before_step))
                if on_epoch_end is not None:
                    on_epoch_end(epoch, history[-1])
        finally:
            qat_model.train(was_training)
    return history


def _run_epoch(model, batches, loss_fn, opt, device, before_step=None) -> float:
    total, count = 0.0, 0
    for batch in batches:
        if before_step is not None:
            before_step()
        batch = _to_device(batch if isinstance(batch, (tuple, list)) else (batch,), device)
        loss = loss_fn(model(batch[0]), batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"QAT loss is {loss.item()} at step {count + 1}; lower lr (now "
                                     f"{opt.param_groups[0]['lr']:g}) or check the targets")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, count = total + loss.item(), count + 1
        batches.set_postfix(loss=f"{total / count:.4g}", refresh=False)
    if count == 0:
        raise DataError("the QAT loader yielded no batch")
    return total / count


def _len_or_none(obj) -> int | None:
    try:
        return len(obj)
    except TypeError:
        return None


def _to_device(batch: Sequence, device: torch.device) -> tuple:
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in batch)


def _make_optimizer(name: str, params: list, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)
    if name == "adamw":  # foreach: the same update as the per-tensor loop, in fewer calls
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, foreach=True)
    raise unknown_choice("optimizer", name, OPTIMIZERS)
