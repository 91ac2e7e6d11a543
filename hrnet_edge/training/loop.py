"""The training loop: seeded, resumable, with progress and per-epoch metrics.

The model and its batches live on ``[train] device`` and the forward pass runs in
``[train] precision`` (:mod:`hrnet_edge.training.device`); the weights, the loss and
the checkpoints stay fp32, and checkpoints are written from CPU copies, so a run
resumes on any device.
"""
from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from hrnet_edge.faults import kill_point
from hrnet_edge.io import write_text
from hrnet_edge.models import create_model
from hrnet_edge.runconfig import RunConfig
from hrnet_edge.runs import RunDir
from hrnet_edge.training.checkpoint import (
    load_model_weights, load_optimizer_state, read_state, save_checkpoint,
)


def lr_at(step: int, total: int, warmup: int, base: float, schedule: str = "cosine",
          poly_power: float = 0.9, milestones: tuple[int, ...] = (), steps_per_epoch: int = 1) -> float:
    """The learning rate of ``step``: linear warm-up, then the schedule.

    ``cosine`` decays to 1% of ``base``; ``poly`` is ``base * (1 - t)^poly_power``
    (HRNetV2's segmentation schedule); ``step`` multiplies by 0.1 at each milestone epoch.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    if schedule == "poly":
        return base * max(0.0, 1 - t) ** poly_power
    if schedule == "step":
        return base * 0.1 ** sum(step >= m * steps_per_epoch for m in milestones)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


# Decoded training and validation images kept in memory when they fit in this much
# (the built-in detection data: 1400 images of 256x256, 263 MiB).
DECODED_IMAGES_MAX_BYTES = 1 << 30


def keep_decoded(datasets, max_bytes: int = DECODED_IMAGES_MAX_BYTES) -> int:
    """Let datasets that can (``keep_in_memory``) keep their decoded images, while the
    splits together fit in ``max_bytes``; returns the bytes kept."""
    kept = 0
    for ds in datasets:
        if hasattr(ds, "keep_in_memory"):
            kept += ds.keep_in_memory(max_bytes - kept)
    return kept


def make_optimizer(model, cfg: RunConfig):
    """AdamW or SGD with momentum, as ``[train]`` says.

    ``foreach=True``: one multi-tensor update instead of a Python loop over the
    parameters (torch turns it on by default only on CUDA). On the CPU it gives the same
    weights bit for bit and saves ~2 of 8 ms per step for an HRNet-W8's ~400 tensors.
    """
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                               nesterov=t.nesterov, foreach=True)
    return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, foreach=True)


def evaluate_model(model, val_ds, cfg: RunConfig, batch_size: int = 32, progress: bool = False) -> dict:
    """The task's metrics of a PyTorch model on the validation set, computed in fp32 on
    the device the model is on."""
    from hrnet_edge.tasks import torch_infer

    return cfg.task.evaluate(torch_infer(model), val_ds, cfg, batch_size=batch_size, progress=progress).metrics


def _loader(ds, cfg: RunConfig, shuffle: bool, epoch: int, world=None, pin_memory: bool = False) -> DataLoader:
    """The batches of one epoch; under torchrun (``world`` active) this process's slice
    of one shuffled order (the same order for the same seed and epoch)."""
    batch_size = cfg.train.batch_size
    if world is not None and world.active and shuffle:  # torchrun: this process's slice
        return DataLoader(ds, batch_size=batch_size, sampler=world.sampler(ds, cfg.train.seed, epoch),
                          drop_last=True, num_workers=cfg.data.workers, worker_init_fn=_seed_worker,
                          pin_memory=pin_memory)
    g = torch.Generator().manual_seed(cfg.train.seed * 1000 + epoch)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle,
                      num_workers=cfg.data.workers, generator=g,
                      worker_init_fn=_seed_worker, persistent_workers=False, pin_memory=pin_memory)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)


def train(run: RunDir, cfg: RunConfig, progress: bool = True, log=print) -> dict[str, Any]:
    """Train the run's model, resuming from ``checkpoints/last`` if present.

    Returns the final state (epoch, best metric, history, ``ran_on``: the device,
    its name, the precision and the processes of each session from the epoch it began).
    """
    from hrnet_edge.training.device import resolve
    from hrnet_edge.training.distributed import context

    task, world = cfg.task, context()  # one process, or this one of torchrun's
    place = resolve(cfg.train, world.local_rank)  # a device this machine lacks: ConfigError
    if not world.is_main:  # only process 0 writes and logs
        log, progress = (lambda *_a, **_k: None), False
    log(f"[train] {place.describe()}" + (f", {world.size} processes" if world.size > 1 else "")
        + (", channels-last" if cfg.train.channels_last else ""))
    if cfg.recorded:
        log(f"[train] recorded only, not applied: {', '.join(f'{k}={v}' for k, v in cfg.recorded.items())}")
    torch.manual_seed(cfg.train.seed)
    if not world.is_main:
        world.barrier()  # process 0 writes the built-in data first
    train_ds, val_ds = task.datasets(run, cfg, generate=True)
    if world.is_main:
        world.barrier()
    from hrnet_edge.data.preflight import preflight

    log(f"[train] {preflight((('training', train_ds), ('validation', val_ds)))}")  # before any step
    kept = keep_decoded((train_ds, val_ds))
    if kept:
        log(f"[train] decoded images kept in memory ({kept / 2**20:.0f} MiB): no decoding per epoch")
    model = create_model(cfg.model, **cfg.model_overrides)
    if cfg.init.path is not None and not (run.checkpoints / "last.safetensors").is_file():
        from hrnet_edge.weights import load_weights

        report = load_weights(model, cfg.init.path, cfg.init.parts, cfg.init.source, sha256=cfg.init.sha256)
        log(f"[train] initialised {report.summary()}")
        for note in report.notes:
            log(f"[train] note: {note}")
    state: dict[str, Any] = {"epoch": 0, "best": -1.0, "history": [], "step": 0, "ran_on": []}
    last = run.checkpoints / "last.safetensors"
    saved = load_model_weights(model, last) if last.is_file() else None  # CPU tensors into the CPU model
    model.to(place.device)
    if cfg.train.channels_last:  # checkpoints are written contiguous (training/checkpoint.py)
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)  # after the move: its state lives beside the weights
    scaler = place.grad_scaler()
    if saved is not None:  # weights and state are one file (see training/checkpoint.py)
        load_optimizer_state(opt, last, saved)  # torch moves the state to each parameter's device
        if saved.get("grad_scaler") and scaler.is_enabled():
            scaler.load_state_dict(saved["grad_scaler"])
        state = {k: saved[k] for k in ("epoch", "best", "history", "step")}
        state["ran_on"] = list(saved.get("ran_on", []))
        log(f"[train] resuming from epoch {state['epoch']} (best {task.metric} {state['best']:.4f})")
    here = {**place.record(), "processes": world.size}
    if not state["ran_on"] or {k: v for k, v in state["ran_on"][-1].items() if k != "from_epoch"} != here:
        state["ran_on"].append({"from_epoch": state["epoch"], **here})
    net = world.wrap(model, cfg.train.sync_bn)  # DDP under torchrun; `model` keeps the weights
    steps_per_epoch = len(train_ds) // (cfg.train.batch_size * world.size)
    if steps_per_epoch == 0:
        from hrnet_edge.errors import ConfigError

        raise ConfigError(f"batch_size {cfg.train.batch_size} x {world.size} process(es) exceeds the "
                          f"{len(train_ds)} training items")
    sched = {"total": steps_per_epoch * cfg.train.epochs, "warmup": steps_per_epoch * cfg.train.warmup_epochs,
             "steps_per_epoch": steps_per_epoch,
             "lr": cfg.train.lr * world.lr_scale(cfg.train.batch_size, cfg.train.lr_reference_batch)}
    for epoch in range(state["epoch"], cfg.train.epochs):
        t0 = time.time()
        if hasattr(train_ds, "set_epoch"):  # augmentation drawn per epoch, reproducibly
            train_ds.set_epoch(epoch)
        loader = _loader(train_ds, cfg, True, epoch, world, pin_memory=place.device.type == "cuda")
        loss = _train_epoch(net, opt, loader, state, sched, cfg, progress,
                            desc=f"epoch {epoch + 1}/{cfg.train.epochs}", place=place, scaler=scaler)
        loss = world.mean(loss)
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": loss}
        if (epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == cfg.train.epochs:
            row.update(world.from_main(lambda: evaluate_model(model, val_ds, cfg, batch_size=64)))
        row["seconds"] = round(time.time() - t0, 1)
        state["epoch"] = epoch + 1
        if scaler.is_enabled():  # fp16's loss scale resumes where it was
            state["grad_scaler"] = scaler.state_dict()
        state["history"].append(row)
        is_best = row.get(task.metric, -1.0) > state["best"]
        kill_point("train:after-epoch")
        if is_best:
            state["best"] = row[task.metric]
            best_state = {k: v for k, v in state.items() if k in ("epoch", "best", "step", "ran_on")}
            if world.is_main:
                save_checkpoint(run.checkpoints / "best.safetensors", model, {**best_state, "metrics": row})
        kill_point("train:between-best-and-last")
        # written after best: resume never loses best; a resume from the previous last
        # repeats this epoch exactly and writes the same best again
        if world.is_main:
            save_checkpoint(last, model, state, opt)
            write_metrics_csv(run.metrics_csv, state["history"])
        world.barrier()
        log(_fmt_row(row, task.shown_metrics) + ("  *best*" if is_best else ""))
    return state


def _train_epoch(model, opt, loader, state, sched, cfg, progress, desc, place, scaler) -> float:
    """One pass over ``loader``: batches moved to the model's device, the forward pass in
    ``place``'s precision, the loss in fp32 (fp16: scaled by ``scaler``)."""
    from tqdm import tqdm

    from hrnet_edge.console import bar_stream
    from hrnet_edge.training.device import as_float, to_device

    task, t = cfg.task, cfg.train
    model.train()
    losses = []
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True, file=bar_stream())
    for batch in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(state["step"], sched["total"], sched["warmup"], sched.get("lr", t.lr), t.schedule,
                            t.poly_power, t.milestones, sched["steps_per_epoch"])
        batch = to_device(batch, place.device)
        images = task.inputs(batch)
        if t.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with place.autocast():
            outputs = model(images)
        loss = task.loss(as_float(outputs), batch, cfg)  # outside autocast: fp32
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        state["step"] += 1
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.2e}")
    return float(np.mean(losses)) if losses else float("nan")


def _fmt_row(row: dict, metrics: tuple[str, ...]) -> str:
    shown = ("epoch", "lr", "train_loss", *metrics, "seconds")
    parts = [f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in shown if k in row]
    return "[train] " + " ".join(parts)


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    """Rewrite metrics.csv (atomically) from the full history."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    write_text(path, buf.getvalue())


def load_trained(run: RunDir, cfg: RunConfig, which: str = "best"):
    """The run's trained float model (eval mode) and its checkpoint's sha256."""
    model = create_model(cfg.model, **cfg.model_overrides)
    path = run.best_checkpoint() if which == "best" else run.checkpoints / f"{which}.safetensors"
    state = load_model_weights(model, path)
    return model.eval(), state.get("sha256") or read_state(path).get("sha256")
