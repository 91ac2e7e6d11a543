"""The pipeline's stages, each reading what the previous one wrote in the run directory.

train -> qat -> export -> check -> report. Any stage can be re-run alone; export and
check skip what already exists unless ``force`` is given.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from hrnet_edge.console import child_console, say
from hrnet_edge.errors import ExportError, MissingDependency, RunDirError
from hrnet_edge.faults import kill_point
from hrnet_edge.io import read_json, sha256_file, write_json
from hrnet_edge.pipeline.cpu_share import parallel_checks, run_child
from hrnet_edge.runconfig import RunConfig
from hrnet_edge.runs import RunDir, require_trained

Log = Callable[[str], None]


def stage_train(run: RunDir, cfg: RunConfig, progress: bool = True, log: Log = say) -> dict:
    """Training on [train] device, in [train] precision (resumes from the last checkpoint)."""
    from hrnet_edge.training.loop import train

    return train(run, cfg, progress=progress, log=log)


def stage_qat(run: RunDir, cfg: RunConfig, progress: bool = True, log: Log = say,
              rethread: Callable[[], None] | None = None) -> dict:
    """NNCF INT8 initialisation from training images, QAT fine-tuning, evaluation.

    On ``[train] device``, in fp32 (fake quantization simulates int8 rounding of fp32
    values; ``[train] precision`` applies to float training only). Under torchrun every
    process calibrates the same images and fine-tunes its slice of each epoch inside
    DistributedDataParallel (which starts all from process 0's weights and ranges);
    process 0 evaluates and alone writes the QAT files and ``metrics.json``.

    ``rethread``: called between phases and before every fine-tuning step
    (:meth:`EarlyExports.thread_share`: the pipeline's QAT takes the second core when the
    float exports beside it end).
    """
    import dataclasses

    import torch
    from torch.utils.data import DataLoader

    from hrnet_edge.training.device import resolve
    from hrnet_edge.training.distributed import context
    from hrnet_edge.training.loop import evaluate_model, load_trained
    from quantization import finetune, quantize_model, save_qat

    task, world = cfg.task, context()  # one process, or this one of torchrun's
    place = dataclasses.replace(resolve(cfg.train, world.local_rank), precision="fp32")
    if not world.is_main:  # only process 0 writes and logs
        log, progress = (lambda *_a, **_k: None), False
    torch.manual_seed(cfg.train.seed)
    t0 = mark = time.time()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal mark
        now = time.time()
        timings[name], mark = round(now - mark, 1), now
        if rethread is not None:
            rethread()

    require_trained(run, cfg)
    log(f"[qat] {place.describe()}" + (f", {world.size} processes" if world.size > 1 else ""))
    # a redo starts by withdrawing the old result: metrics.json is what marks QAT done,
    # so a kill from here on leaves a run without QAT, never the old metrics beside new weights
    if world.is_main:
        (run.qat_dir / "metrics.json").unlink(missing_ok=True)
    model, sha = load_trained(run, cfg)
    model.to(place.device)
    train_ds, val_ds = task.datasets(run, cfg)
    calib = task.calibration_images(run, cfg, cfg.qat.calibration_images, seed=cfg.data.seed)
    lap("load")
    fp32 = world.from_main(lambda: evaluate_model(model, val_ds, cfg))
    lap("eval_fp32")
    qm = quantize_model(model, calib, bias_correction=cfg.qat.bias_correction)
    lap("nncf_quantize")
    ptq = world.from_main(lambda: evaluate_model(qm, val_ds, cfg))
    lap("eval_ptq")
    m, label = task.metric, task.metric_label
    log(f"[qat] FP32 {label} {fp32[m]:.4f}; INT8 after NNCF init (PTQ) {label} {ptq[m]:.4f}")
    history = []
    steps = cfg.qat.steps_per_epoch or None  # 0 in the configuration: the whole epoch
    if cfg.qat.epochs > 0:
        pin, sampler = place.device.type == "cuda", None
        if world.active:  # this process's slice of one shuffled order, reshuffled per epoch
            sampler = world.sampler(train_ds, cfg.train.seed, 0)
            loader = DataLoader(train_ds, batch_size=cfg.qat.batch_size, sampler=sampler, drop_last=True,
                                num_workers=cfg.data.workers, pin_memory=pin)
        else:
            loader = DataLoader(train_ds, batch_size=cfg.qat.batch_size, shuffle=True, drop_last=True,
                                num_workers=cfg.data.workers, pin_memory=pin,
                                generator=torch.Generator().manual_seed(cfg.train.seed))

        def next_epoch(epoch: int, _loss: float) -> None:
            if sampler is not None:
                sampler.set_epoch(epoch)

        losses = finetune(world.wrap(qm, sync_bn=False), loader, lambda out, batch: task.loss(out, batch, cfg),
                          epochs=cfg.qat.epochs, lr=cfg.qat.lr, steps_per_epoch=steps,
                          progress=progress, on_epoch_end=next_epoch, before_step=rethread)
        history = [{"epoch": i + 1, "train_loss": world.mean(float(v))} for i, v in enumerate(losses)]
    lap("finetune")
    # no fine-tuning: the model is the one just evaluated as PTQ
    qat = world.from_main(lambda: evaluate_model(qm, val_ds, cfg)) if cfg.qat.epochs > 0 else ptq
    lap("eval_qat")
    done = (f"after {cfg.qat.epochs} QAT epoch(s){f' of {steps} steps' if steps else ''}" if cfg.qat.epochs
            else "from NNCF's init alone ([qat] epochs = 0)")
    log(f"[qat] INT8 {done} {label} {qat[m]:.4f}")
    result = {"metric": m, "fp32": fp32, "ptq": ptq, "qat": qat, "history": history,
              "source_checkpoint_sha256": sha,
              "schedule": {"epochs": cfg.qat.epochs, "steps_per_epoch": steps,
                           "batch_size": cfg.qat.batch_size, "lr": cfg.qat.lr,
                           "bias_correction": cfg.qat.bias_correction}}
    if world.is_main:
        save_qat(qm, run.qat_dir, torch.from_numpy(calib[:1]))
        lap("save")
        kill_point("qat:before-metrics")
        log("[qat] seconds: " + ", ".join(f"{k} {v}" for k, v in timings.items()))
        result.update(qat_sha256=qat_files_sha256(run), calibration_images=int(len(calib)),
                      ran_on={**place.record(), "processes": world.size},
                      seconds=round(time.time() - t0, 1), timings_s=timings)
        write_json(run.qat_dir / "metrics.json", result)
    world.barrier()  # every process returns once the QAT files are whole
    return result


QAT_FILES = ("qat.safetensors", "qat_config.json")


def qat_files_sha256(run: RunDir) -> str:
    """One sha256 over the QAT model's files (weights, then the NNCF config)."""
    import hashlib

    h = hashlib.sha256()
    for name in QAT_FILES:
        path = run.qat_dir / name
        h.update(sha256_file(path).encode() if path.is_file() else b"missing")
    return h.hexdigest()


def checkpoint_sha256(run: RunDir) -> str:
    """The sha256 of the run's best checkpoint (what every later stage starts from)."""
    return sha256_file(run.best_checkpoint())


def qat_stale_reason(run: RunDir) -> str | None:
    """Why the run's QAT result cannot be used as it is (None: it can)."""
    path = run.qat_dir / "metrics.json"
    if not path.is_file():
        return "the run has no finished QAT"
    metrics = read_json(path)
    if metrics.get("source_checkpoint_sha256") != checkpoint_sha256(run):
        return "the trained checkpoint changed since QAT ran"
    if metrics.get("qat_sha256") not in (None, qat_files_sha256(run)):
        return "the QAT model's files changed since QAT wrote them"
    return None


def check_export_plan(cfg: RunConfig) -> None:
    """ConfigError unless ``[export]`` names known targets and precisions, each precision
    one that some named target exports (checked when a run starts, not at export)."""
    from converters.base import PRECISIONS
    from converters.registry import TARGETS, get_target
    from hrnet_edge.errors import ConfigError, unknown_choice

    for name in cfg.export.targets:
        if name not in TARGETS:
            raise unknown_choice("target", name, TARGETS)
    for p in cfg.export.precisions:
        if p not in PRECISIONS:
            raise unknown_choice("precision", p, PRECISIONS)
    offered = {t: get_target(t).precisions for t in cfg.export.targets}
    for p in cfg.export.precisions:
        if offered and not any(p in ps for ps in offered.values()):
            have = "; ".join(f"{t}: {', '.join(ps)}" for t, ps in offered.items())
            raise ConfigError(f"precision {p!r} is not exported by the target(s) named ({have})")


def planned_exports(cfg: RunConfig) -> list[tuple[str, str]]:
    """(target, precision) pairs this run exports, in order (ONNX first: TFLite needs it)."""
    from converters.base import UINT8_INPUT
    from converters.registry import TARGETS, get_target

    pairs = []
    for name in sorted(cfg.export.targets, key=lambda n: list(TARGETS).index(n) if n in TARGETS else 99):
        for p in get_target(name).precisions:
            # the uint8-input variants are exported when named ([export] precisions)
            if p in cfg.export.precisions or (not cfg.export.precisions and p != UINT8_INPUT):
                pairs.append((name, p))
    return pairs


def _quiet_exporters() -> None:
    """Silence what the exporters print that a user can do nothing about."""
    import os
    import warnings

    # TensorFlow's C++ start-up lines ("Could not find cuda drivers ..."): info only.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Deep copies of exported programs trip a torch deprecation inside torch itself.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*",
                            category=FutureWarning)


def stage_export(run: RunDir, cfg: RunConfig, force: bool = False, log: Log = say,
                 early: EarlyExports | None = None) -> list[dict]:
    """Export every planned (target, precision); a missing backend or a failure becomes a
    row with its reason, never a crash. Returns one row per pair.

    ``early``: the float exports :func:`start_early_exports` began before QAT; their rows
    are collected here, the other pairs exported now."""
    from hrnet_edge.pipeline.jobs import JobFactory

    _quiet_exporters()

    require_trained(run, cfg)  # no (finished) trained model: a clear error, not a column of skipped rows
    merge_index(run, [])  # a damaged index.json is an error before any work, not after it
    pairs = planned_exports(cfg)
    rest = [p for p in pairs if early is None or p not in early.pairs]
    side = [p for p in rest if p[0] in SIDE_TARGETS] if cfg.export.parallel else []
    worker = _start_export_worker(run, side, force, "side") if side and len(side) < len(rest) else None
    done = {}
    try:
        factory = JobFactory(run, cfg)
        for pair in rest:
            if worker is None or pair not in side:
                done[pair] = _export_one(factory, *pair, force, log)
        if worker is not None:
            done.update(_finish_export_worker(worker, side, log))
        if early is not None:
            done.update(early.finish(log))
    except BaseException:
        if worker is not None:
            worker[0].terminate()
        if early is not None:
            early.stop()
        raise
    rows = [done[p] for p in pairs]
    kill_point("export:before-index")
    write_json(run.exports / "index.json", merge_index(run, rows))
    return rows


class EarlyExports:
    """The float exports of a run, begun in a worker process before QAT (the pipeline
    starts them right after training): they need only the trained checkpoint, and they
    are mostly single-threaded graph rewriting. :func:`stage_export` collects their rows.

    The pipeline runs QAT in one thread beside the worker (its steps are many small
    operations: a second thread gives them ~5 %), so each has a core, and in two once the
    worker has ended (:meth:`thread_share`). The worker used to
    run at nice 19 beside a two-thread QAT (at equal priority its one busy thread halved
    the speed of QAT's two); but a niced worker also yielded to the INT8 exports after
    QAT and finished alone, 40-50 s after them (Intel Xeon, 2 vCPUs). Its rows'
    ``seconds`` count the sharing."""

    def __init__(self, run: RunDir, pairs: list[tuple[str, str]], force: bool):
        self.pairs = pairs
        self.worker = _start_export_worker(run, pairs, force, "early")

    def finish(self, log: Log) -> dict:
        return _finish_export_worker(self.worker, self.pairs, log)

    def running(self) -> bool:
        return self.worker[0].poll() is None

    def thread_share(self, threads: int) -> Callable[[], None]:
        """Set this process's torch threads to 1 while the worker runs, and return the
        check :func:`stage_qat` calls between steps, which raises them to ``threads``
        once the worker has ended: a QAT longer than the float exports (pose,
        segmentation, classification) then has both cores for the rest of it, while
        detection's (shorter than its exports) stays at one thread throughout. A raise
        lands at a step that depends on timing, so the last digits of such a QAT can
        differ between runs (its thread count changes the order of some sums)."""
        import torch

        torch.set_num_threads(1 if self.running() else max(1, threads))

        def rethread() -> None:
            if torch.get_num_threads() < threads and not self.running():
                torch.set_num_threads(threads)

        return rethread

    def stop(self) -> None:
        """End the worker (QAT failed or was interrupted): its finished artifacts stay
        whole on disk, an unfinished one is never moved into place."""
        proc = self.worker[0]
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
        self.worker[1].unlink(missing_ok=True)


def start_early_exports(run: RunDir, cfg: RunConfig, force: bool = False) -> EarlyExports | None:
    """Begin the planned exports that do not need QAT (every float precision) in a
    worker process; None when the run exports nothing else (then there is nothing to
    overlap) or ``[export] parallel`` is off."""
    require_trained(run, cfg)
    merge_index(run, [])
    early = early_pairs(cfg)
    if not cfg.export.parallel or not early or len(early) == len(planned_exports(cfg)):
        return None
    _quiet_exporters()
    return EarlyExports(run, early, force)


def early_pairs(cfg: RunConfig) -> list[tuple[str, str]]:
    """The planned float exports (those that need no QAT), in the order the early worker
    makes them: the longest (ExecuTorch's lowering) first, beside QAT, so that the
    worker's short ones end beside the INT8 exports instead of after them. On the
    detection default (Xeon, the same trained run): QAT + exports 195 s against 210 s
    in planned order, and 165 s with QAT in one thread beside the worker (EarlyExports)."""
    from converters.base import quantized_as

    early = [p for p in planned_exports(cfg) if quantized_as(p[1]) != "int8"]
    return sorted(early, key=lambda p: p[0] not in SIDE_TARGETS)  # stable: the rest keep their order


def merge_index(run: RunDir, rows: list[dict]) -> list[dict]:
    """The export index after exporting ``rows``: an export of some targets
    (``--targets``) keeps the index rows of the others whose artifacts are still on
    disk, so a later ``check`` still checks every artifact."""
    index = run.exports / "index.json"
    previous = read_json(index) if index.is_file() else []
    new = {(r["target"], r["precision"]) for r in rows}
    kept = [r for r in previous if (r["target"], r["precision"]) not in new
            and (r.get("status") != "exported" or run.export_dir(r["target"], r["precision"]).is_dir())]
    return kept + rows


# Exports that run in a second process beside the others. Exporting is mostly
# single-threaded Python (graph capture and rewriting); ExecuTorch's lowering alone
# takes about as long as all the other targets together, so on a 2-core machine the
# stage's wall time nearly halves. The per-artifact seconds are then measured while
# the other process runs.
SIDE_TARGETS = ("executorch",)


def _start_export_worker(run: RunDir, pairs: list[tuple[str, str]], force: bool, name: str):
    out = run.exports / f".{name}-worker-rows.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "hrnet_edge.pipeline.stages", "export-worker", str(run.root), str(out)]
    cmd += (["--force"] if force else []) + [f"{t}:{p}" for t, p in pairs]
    env, fds = child_console()  # its [export] lines reach the terminal, its chatter the log
    return subprocess.Popen(cmd, env=env, pass_fds=fds, preexec_fn=child_start), out


def child_start() -> None:
    """In a child process (an export worker, torchrun), before it starts: on Linux,
    SIGTERM when the process that started it ends, so a killed pipeline leaves no
    exporter or trainer writing into the run behind it."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _finish_export_worker(worker, pairs, log: Log) -> dict:
    proc, out = worker
    rc = proc.wait()
    rows = {(r["target"], r["precision"]): r for r in read_json(out)} if out.is_file() else {}
    out.unlink(missing_ok=True)
    for t, p in pairs:
        if (t, p) not in rows:  # the worker died before this export reported
            reason = f"export worker process exited with status {rc} before reporting"
            log(f"[export] {t}-{p}: failed ({reason})")
            rows[(t, p)] = {"target": t, "precision": p, "status": "failed", "reason": reason}
    return rows


def _export_worker_main(argv: list[str]) -> int:
    """``python -m hrnet_edge.pipeline.stages export-worker RUN OUT [--force] target:precision...``"""
    from hrnet_edge.pipeline.jobs import JobFactory
    from hrnet_edge.runs import open_run

    _quiet_exporters()
    run_root, out, rest = argv[0], Path(argv[1]), argv[2:]
    force = "--force" in rest
    pairs = [tuple(a.split(":", 1)) for a in rest if a != "--force"]
    run, cfg = open_run(run_root)
    factory = JobFactory(run, cfg)
    rows = []
    for t, p in pairs:
        rows.append(_export_one(factory, t, p, force, say))
        write_json(out, rows)  # after each: a crash later keeps what was done
    return 0


def _export_one(factory, target_name: str, precision: str, force: bool, log: Log) -> dict:
    from converters.registry import get_target

    target = get_target(target_name)
    out_dir = factory.run.export_dir(target_name, precision)
    row: dict[str, Any] = {"target": target_name, "precision": precision}
    ok, reason = target.available()
    if not ok:
        log(f"[export] {target_name}-{precision}: skipped ({reason})")
        return {**row, "status": "skipped", "reason": reason}
    if (out_dir / "metadata.json").is_file() and not force:
        stale = export_stale_reason(factory, out_dir, precision)
        if stale is None:
            return {**row, "status": "exported", "reason": "kept (exists)", "seconds": 0.0}
        log(f"[export] {target_name}-{precision}: exporting again: {stale}")
    t0 = time.time()
    try:
        job = factory.job(target_name, precision, out_dir)
        artifact = target.export(job)
        from converters.check import save_inspection

        save_inspection(target, out_dir)
    except (ExportError, MissingDependency, RunDirError) as exc:
        log(f"[export] {target_name}-{precision}: {type(exc).__name__}: {exc}")
        return {**row, "status": "skipped" if isinstance(exc, (MissingDependency, RunDirError)) else "failed",
                "reason": str(exc)}
    secs = round(time.time() - t0, 1)
    log(f"[export] {target_name}-{precision}: {out_dir} ({secs}s)")
    for note in artifact.notes:
        if note.startswith("warning:"):
            log(f"[export] {target_name}-{precision}: {note}")
    return {**row, "status": "exported", "reason": "", "seconds": secs,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # the time lives here, not in the artifact


def export_stale_reason(factory, out_dir: Path, precision: str) -> str | None:
    """Why an existing export cannot be kept (None: it can): its files differ from the
    sha256 its metadata records, or it was made from another checkpoint or QAT model."""
    from converters.base import quantized_as
    from converters.check import integrity_problem

    problem = integrity_problem(out_dir)
    if problem:
        return problem
    meta = read_json(out_dir / "metadata.json")
    if meta.get("checkpoint_sha256") != factory.checkpoint_sha256:
        return "it was made from another trained checkpoint"
    if quantized_as(precision) == "int8" and meta.get("qat_sha256") != factory.qat_sha256:
        return ("its metadata predates QAT hashes" if "qat_sha256" not in meta
                else "it was made from another QAT model")
    return None


def stage_check(run: RunDir, cfg: RunConfig, force: bool = False, log: Log = say) -> list[dict]:
    """Check every exported artifact (and the PyTorch references) in its own process,
    two processes at a time (:mod:`hrnet_edge.pipeline.cpu_share`).

    An artifact whose files differ from the sha256 in its metadata.json is a failed row
    at once (never run, never an old row); a saved row is reused only while the
    artifact or checkpoint it describes is unchanged."""
    require_trained(run, cfg)
    pairs = [("pytorch", "fp32")]
    rows = []
    if (run.qat_dir / "metrics.json").is_file():
        stale = qat_stale_reason(run)
        if stale is None:
            pairs.append(("pytorch", "int8"))
        else:
            rows.append({"target": "pytorch", "precision": "int8", "status": "skipped",
                         "reason": f"QAT is out of date ({stale}); run 'hrnet-edge qat --run {run.root}'"})
    index = run.exports / "index.json"
    export_rows = read_json(index) if index.is_file() else []
    for er in export_rows:
        if er["status"] != "exported":
            rows.append({**er, "status": er["status"], "reason": er.get("reason", "")})
            continue
        pairs.append((er["target"], er["precision"]))
    # The references first: every artifact's check compares with their saved outputs.
    refs = [p for p in pairs if p[0] == "pytorch"]
    done = _check_many(run, refs, force, log)
    done.update(_check_many(run, [p for p in pairs if p[0] != "pytorch"], force, log))
    return rows + [done[p] for p in pairs]


def _check_many(run: RunDir, pairs: list[tuple[str, str]], force: bool, log: Log) -> dict:
    """Check ``pairs``, :func:`cpu_share.parallel_checks` processes at a time (each times
    its artifact alone); rows are logged in the order they finish."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    done: dict[tuple[str, str], dict] = {}
    with ThreadPoolExecutor(max_workers=parallel_checks()) as pool:
        pending = {pool.submit(_check_one, run, t, p, force, log): (t, p) for t, p in pairs}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                target, precision = pending.pop(fut)
                done[(target, precision)] = fut.result()
                kill_point(f"check:after-{target}-{precision}")
    return done


def _check_one(run: RunDir, target: str, precision: str, force: bool, log: Log) -> dict:
    path = run.check_path(target, precision)
    if target != "pytorch":
        from converters.check import integrity_problem

        problem = integrity_problem(run.export_dir(target, precision))
        if problem:  # checked first: a damaged artifact is never run, nor an old row kept
            row = {"target": target, "precision": precision, "status": "failed",
                   "reason": f"artifact integrity: {problem}; re-export it with "
                             f"'hrnet-edge export --run {run.root} --force'"}
            write_json(path, row)
            log(_summary(row, 0.0))
            return row
    if path.is_file() and not force:
        row = read_json(path)
        stale = _stale_reason(run, target, precision, row)
        if row.get("status") != "error" and stale is None:
            return row
        if stale:
            log(f"[check] {target}-{precision}: {stale}; checking again")
    path.unlink(missing_ok=True)  # a stale row must never stand in for this check
    t0 = time.time()
    proc = run_child(run.checks, [sys.executable, "-m", "hrnet_edge.pipeline.checking", str(run.root),
                                  target, precision])
    if path.is_file():
        row = read_json(path)
    else:  # the process died before writing (e.g. a runtime crashed)
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        row = {"target": target, "precision": precision, "status": "error",
               "reason": f"check process exited with {proc.returncode}: {' | '.join(tail)}"}
        write_json(path, row)
    if row.get("status") == "error" and proc.returncode != 0 and "traceback" not in row:
        row["traceback_tail"] = (proc.stderr or "").strip().splitlines()[-6:]
        write_json(path, row)
    log(_summary(row, time.time() - t0))
    return row


def _stale_reason(run: RunDir, target: str, precision: str, row: dict) -> str | None:
    """Why a saved check row no longer describes the artifact on disk (None: it does)."""
    if row.get("status") in ("skipped", "error", "failed") and target != "pytorch" \
            and row.get("reason", "").startswith("artifact integrity"):
        return "the artifact failed its integrity check before"
    if target == "pytorch":
        if row.get("status") == "error":
            return None
        if row.get("source_sha256") != reference_source_sha256(run, precision):
            return "the PyTorch model changed since its check"
        return None
    if row.get("status") in ("skipped", "error"):
        return None
    art_dir = run.export_dir(target, precision)
    if not art_dir.is_dir():
        return "the artifact is gone"
    from converters.check import artifact_files, artifact_hash

    if not artifact_files(art_dir):
        return "the artifact is gone"
    if "artifact_sha256" not in row:
        return "the saved row predates artifact hashes"
    if row["artifact_sha256"] != artifact_hash(art_dir):
        return "the artifact changed since its check (re-exported or modified)"
    return None


def reference_source_sha256(run: RunDir, precision: str) -> str:
    """The sha256 of what the PyTorch reference ``precision`` runs: the best checkpoint
    (fp32) or the QAT model's files (int8)."""
    return qat_files_sha256(run) if precision == "int8" else checkpoint_sha256(run)


def _summary(row: dict, secs: float) -> str:
    name = f"{row['target']}-{row['precision']}"
    metric = row.get("metric_name")
    value = row.get("metric", {}).get(metric) if metric else None
    lat = row.get("latency", {}).get("p50_ms")
    bits = [f"[check] {name}: {row['status']}"]
    if value is not None:
        bits.append(f"{metric} {value:.4f}")
    if lat is not None:
        bits.append(f"p50 {lat:.2f} ms")
    if row.get("reason"):
        bits.append(f"({row['reason']})")
    return " ".join(bits) + f" [{secs:.0f}s]"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "export-worker":
        sys.exit(_export_worker_main(sys.argv[2:]))
    sys.exit("usage: python -m hrnet_edge.pipeline.stages export-worker RUN OUT [--force] target:precision...")
