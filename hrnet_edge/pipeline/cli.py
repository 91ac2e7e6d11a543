"""Subcommands that work on a run directory: train, qat, export, check, report, pipeline,
bundle.

Each reads what the previous stage wrote, so any stage can be re-run alone:
``hrnet-edge export --run runs/default --force`` re-exports without retraining.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from pathlib import Path

from hrnet_edge.console import say

DEFAULT_RUN = "runs/default"
PROJECT_PREFIXES = ("[train]", "[qat]", "[export]", "[check]", "[pipeline]")


def _run_args(p: argparse.ArgumentParser, config: bool = False) -> None:
    # --run-dir: the same, for command lines after torchrun's, whose parser takes --run for
    # an abbreviation of its own --run-path
    p.add_argument("--run", "--run-dir", dest="run",
                   help=f"run directory (default: {DEFAULT_RUN}, or runs/<model> with --model)")
    if config:
        p.add_argument("--config", help="run configuration, .json or .toml (default: built-in)")
        p.add_argument("--model", help="variant to train, e.g. hrnet_w8_seg (replaces the config's "
                                       "model; the task's defaults fill the rest)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true",
                   help="show what the libraries print (by default it goes to RUN/logs/<command>.log)")


def add_parsers(sub, command) -> None:
    """Add the run-directory subcommands to ``sub``; ``command`` registers handlers."""
    p = sub.add_parser("train", help="train the run's model on [train] device, in [train] precision "
                                     "(resumes if interrupted)")
    _run_args(p, config=True)
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train with N processes on this machine through torchrun (DistributedDataParallel: "
                        "one per GPU, or CPU workers with gloo); [train] batch_size is per process "
                        "(default: the run's [train] processes)")
    p = sub.add_parser("qat", help="NNCF INT8 init + quantization-aware fine-tuning")
    _run_args(p)
    p.add_argument("--force", action="store_true", help="redo QAT even if the run has it")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="fine-tune with N processes on this machine through torchrun, as train --nproc; "
                        "[qat] batch_size is per process")
    p = sub.add_parser("export", help="export to every target and precision")
    _run_args(p)
    p.add_argument("--targets", nargs="+", help="subset of targets (default: the run config's)")
    p.add_argument("--precisions", nargs="+",
                   help="subset of precisions (default: the run config's, else every one a target has "
                        "but int8u8: INT8 taking uint8 RGB NHWC, exported only when named)")
    p.add_argument("--force", action="store_true", help="re-export existing artifacts")
    p = sub.add_parser("check", help="check artifacts against PyTorch; write report.json/.md")
    _run_args(p)
    p.add_argument("--force", action="store_true", help="re-check artifacts already checked")
    p = sub.add_parser("report", help="re-render report.md and pareto.png from the checks "
                                      "(--add merges results measured on devices)")
    _run_args(p)
    p.add_argument("--add", nargs="+", metavar="FILE",
                   help="device results to merge: hrnet-edge-run result JSON, OpenVINO benchmark_app "
                        "-json_stats benchmark_report.json, litert-benchmark --result_json, or the ExecuTorch "
                        "Android benchmark app's benchmark_results.json; kept in RUN/devices/")
    p.add_argument("--label", help="with --add: the device's name in the report (default: the file's label, "
                                   "else the device the tool names)")
    p.add_argument("--target", help="with --add: the artifact's target, for files that name neither its "
                                    "sha256 nor a <target>-<precision>/model file path")
    p.add_argument("--precision", help="with --add: the artifact's precision (as --target)")
    p.add_argument("--force", action="store_true",
                   help="with --add: keep results that match no artifact of the run, marked unmatched")
    p = sub.add_parser("pipeline", help="train -> qat -> export -> check -> report, in one run directory")
    _run_args(p, config=True)
    p.add_argument("--force", action="store_true", help="redo QAT, exports and checks")
    p = sub.add_parser("bundle", help="one zip to copy to a device: artifacts, the device runtime, "
                                      "sample inputs with expected outputs, a README per device")
    _run_args(p)
    p.add_argument("--artifacts", nargs="+", required=True, metavar="NAME",
                   help="export folders to include, e.g. tflite-int8 openvino-int8")
    p.add_argument("--out", required=True, help="the zip to write (atomically)")
    p.add_argument("--samples", type=int, default=4, metavar="N",
                   help="validation images to include with each artifact's expected outputs (default 4)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    for name, fn in (("train", cmd_train), ("qat", cmd_qat), ("export", cmd_export),
                     ("check", cmd_check), ("report", cmd_report), ("pipeline", cmd_pipeline),
                     ("bundle", cmd_bundle)):
        command(name)(fn)


def _init(args, allow_new: bool):
    """The run directory and its configuration. A new configuration is checked in full
    (types, ranges, target and precision names, a [train] device and precision this
    machine can run) before anything is written; the run directory must be a writable
    folder; what interrupted writes left is recovered."""
    from hrnet_edge.pipeline.stages import check_export_plan
    from hrnet_edge.runconfig import load_run_config
    from hrnet_edge.runs import check_writable, init_run, open_run, tidy_run

    model = getattr(args, "model", None)
    root = Path(args.run or (f"runs/{model}" if model else DEFAULT_RUN))
    if allow_new and (getattr(args, "config", None) or model or not (root / "config.json").is_file()):
        cfg = load_run_config(getattr(args, "config", None), model=model)
        check_export_plan(cfg)
        from hrnet_edge.training.device import resolve

        resolve(cfg.train)  # [train] device and precision this machine can run, before any write
        run = init_run(root, cfg)
    else:
        run, cfg = open_run(root)
        check_writable(run.root)
    if getattr(args, "tidy", True):  # off while the pipeline's export worker writes into the run
        for line in tidy_run(run):
            say(f"[{getattr(args, 'command', 'run')}] {line}")
    return run, cfg


@contextlib.contextmanager
def _run_log(args, run, name: str):
    """Third-party output of the command into ``RUN/logs/<name>.log`` (not with
    ``--verbose``). When the command fails with an error, the log's last lines that
    are not the project's own are shown; a non-zero exit names the log."""
    from hrnet_edge.console import chatter_to, say, tail

    result: dict = {}
    with chatter_to(run.root / "logs" / f"{name}.log", enabled=not getattr(args, "verbose", False)) as path:
        try:
            yield result
        except BaseException:
            if path is not None:
                lines = [line for line in tail(path, 400) if not line.startswith(PROJECT_PREFIXES)][-15:]
                if lines:
                    say(f"[{name}] the last lines the libraries printed ({path}):")
                    for line in lines:
                        say(f"    {line}")
            raise
    if path is not None and result.get("rc", 0) != 0:
        say(f"[{name}] what the libraries printed: {path}")


def _threads(cfg, threads: int | None = None) -> None:
    import torch

    torch.set_num_threads(threads or max(1, cfg.check.threads))


def cmd_train(args) -> int:
    from hrnet_edge.pipeline.stages import stage_train
    from hrnet_edge.training import distributed

    _nproc(args)  # a bad --nproc is an error before the run directory is touched
    world = distributed.context()  # under torchrun: join the other processes
    if not world.is_main:  # process 0 sets the run directory up; the others only read it
        from hrnet_edge.runs import open_run

        world.barrier()
        run, cfg = open_run(args.run or (f"runs/{args.model}" if args.model else DEFAULT_RUN))
        stage_train(run, cfg, progress=False)
        world.close()
        return 0
    run, cfg = _init(args, allow_new=True)
    if not distributed.launched():
        nproc = _nproc(args, cfg.train.processes)
        if nproc > 1 and not _finished(run, cfg):  # --nproc, else [train] processes
            return _torchrun(args, run, cfg, nproc, "train")
    world.barrier()
    with _run_log(args, run, "train"):
        if not world.active:  # torchrun sets each process's threads (OMP_NUM_THREADS)
            _threads(cfg)
        state = stage_train(run, cfg, progress=not args.no_progress)
        say(f"[train] best {cfg.task.metric_label} {state['best']:.4f}; checkpoints in {run.checkpoints}")
    world.close()
    return 0


def _finished(run, cfg) -> bool:
    """Whether the run's training has reached [train] epochs (then one process reports it:
    no torchrun is started for nothing)."""
    from hrnet_edge.errors import HRNetEdgeError
    from hrnet_edge.runs import require_trained

    try:
        require_trained(run, cfg)
    except (HRNetEdgeError, OSError, ValueError):
        return False  # unfinished, or a damaged checkpoint: the training path says which
    return True


def _nproc(args, default: int = 1) -> int:
    """The processes a ``train`` or ``qat`` command is to run in: ``--nproc``, else
    ``default`` (``train``: the run's ``[train] processes``)."""
    from hrnet_edge.errors import HRNetEdgeError

    nproc = getattr(args, "nproc", None)
    nproc = default if nproc is None else nproc
    if nproc < 1:
        raise HRNetEdgeError(f"--nproc must be >= 1, got {nproc}")
    return nproc


def _torchrun(args, run, cfg, nproc: int, command: str) -> int:
    """Run ``train`` or ``qat`` of the set-up ``run`` in ``nproc`` processes through
    torchrun (the run was set up here first: a bad configuration is one line, as with
    one process).

    Inside a run whose library output goes to a log (``pipeline``), torchrun's
    processes get the log as stdout and the terminal as stderr, and each one swaps
    them back at start (:func:`hrnet_edge.console.attach`): the project's lines and
    progress bars reach the terminal, the libraries' output the log."""
    import subprocess
    import sys

    from hrnet_edge.console import ENV_FD, STDERR_IS_TERMINAL, child_console
    from hrnet_edge.errors import ConfigError, HRNetEdgeError
    from hrnet_edge.pipeline.stages import child_start
    from hrnet_edge.training.device import resolve_device
    from hrnet_edge.training.launch import INTERRUPTED

    for rank in range(nproc):  # a CUDA device per process: checked before any process starts
        try:
            resolve_device(cfg.train.device, rank)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; run fewer processes ([train] processes, or --nproc)") from None
    torchrun = ["--standalone", f"--nproc-per-node={nproc}", "-m", "hrnet_edge.cli", command,
                "--run-dir", str(run.root)]
    flags = ("--no-progress", "--verbose") + (("--force",) if command == "qat" else ())
    torchrun += [flag for flag in flags if getattr(args, flag[2:].replace("-", "_"), False)]
    say(f"[{command}] {nproc} processes: torchrun {' '.join(torchrun)}")
    env, fds = child_console()
    stderr = None
    if fds:  # torchrun passes its processes no descriptor but 0, 1 and 2
        env[ENV_FD], stderr = STDERR_IS_TERMINAL, fds[0]
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own choice, without its notice about it
    # a killed pipeline or train command takes torchrun (and torchrun its processes) with it
    proc = subprocess.Popen([sys.executable, "-m", "hrnet_edge.training.launch", *torchrun], env=env,
                            stderr=stderr, preexec_fn=child_start)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached torchrun too: it stops its processes first
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if rc == INTERRUPTED:
        raise KeyboardInterrupt
    if rc != 0:
        what, kept = ("training", "every completed epoch") if command == "train" else ("QAT", "the trained model")
        raise HRNetEdgeError(
            f"distributed {what} stopped: torchrun exited with status {rc} (a process failed or was "
            f"killed; its error is above{' and in the log' if fds else ''}). {run.root} keeps {kept}: "
            "run the same command again to resume")
    return 0


def _qat_plan(args) -> str | None:
    """Process 0's part of ``qat`` before any work: the run set up and checked; its
    directory when QAT is to run, None when the run's QAT stands."""
    from hrnet_edge.pipeline.stages import qat_stale_reason
    from hrnet_edge.runs import require_trained

    run, cfg = _init(args, allow_new=False)
    require_trained(run, cfg)
    stale = qat_stale_reason(run)
    if stale is None and not args.force:
        say(f"[qat] {run.qat_dir} exists; --force to redo")
        return None
    if stale and (run.qat_dir / "metrics.json").is_file():
        say(f"[qat] redoing QAT: {stale}")
    return str(run.root)


def cmd_qat(args) -> int:
    from hrnet_edge.pipeline.stages import stage_qat
    from hrnet_edge.runs import open_run
    from hrnet_edge.training import distributed

    nproc = _nproc(args)
    if not distributed.launched() and nproc > 1:
        run, cfg = _init(args, allow_new=False)
        return _torchrun(args, run, cfg, nproc, "qat")
    world = distributed.context()  # under torchrun: join the other processes
    root = world.from_main(lambda: _qat_plan(args))  # the same decision in every process
    if root is None:
        world.close()
        return 0
    run, cfg = open_run(root)
    if not world.is_main:  # process 0 logs and writes; the others fine-tune their slices
        stage_qat(run, cfg, progress=False)
        world.close()
        return 0
    with _run_log(args, run, "qat"):
        rethread, beside = None, getattr(args, "qat_beside", None)
        if not world.active:  # torchrun sets each process's threads (OMP_NUM_THREADS)
            if beside is not None:  # the pipeline's export worker: one thread until it ends
                rethread = beside.thread_share(max(1, cfg.check.threads))
            else:
                _threads(cfg)
        stage_qat(run, cfg, progress=not args.no_progress, rethread=rethread)
    world.close()
    return 0


def cmd_export(args, early=None) -> int:
    """``early``: float exports the pipeline began before QAT (stages.EarlyExports)."""
    from hrnet_edge.pipeline.stages import stage_export

    run, cfg = _init(args, allow_new=False)
    if args.targets:
        cfg = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, targets=tuple(args.targets)))
    if getattr(args, "precisions", None):
        from converters.base import PRECISIONS
        from hrnet_edge.errors import unknown_choice

        for p in args.precisions:
            if p not in PRECISIONS:
                raise unknown_choice("precision", p, PRECISIONS)
        cfg = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, precisions=tuple(args.precisions)))
    from hrnet_edge.pipeline.stages import check_export_plan

    check_export_plan(cfg)
    with _run_log(args, run, "export") as result:
        _threads(cfg)
        rows = stage_export(run, cfg, force=args.force, early=early)
        failed = [r for r in rows if r["status"] == "failed"]
        say(f"[export] {sum(r['status'] == 'exported' for r in rows)} exported, "
            f"{sum(r['status'] == 'skipped' for r in rows)} skipped, {len(failed)} failed -> {run.exports}")
        result["rc"] = 1 if failed else 0
    return result["rc"]


def cmd_check(args) -> int:
    from converters.report import build_report, failed_rows
    from hrnet_edge.pipeline.stages import stage_check

    run, cfg = _init(args, allow_new=False)
    with _run_log(args, run, "check"):
        rows = stage_check(run, cfg, force=args.force)
        report = build_report(run, rows)
        bad = failed_rows(report)
        say(f"[check] report: {run.report_md} ({len(bad)} failed)")
    return 1 if bad else 0


def cmd_report(args) -> int:
    from converters.report import build_report
    from hrnet_edge.io import read_json

    run, _cfg = _init(args, allow_new=False)
    if getattr(args, "add", None):
        from converters.device_results import add_device_results

        for row in add_device_results(run, args.add, label=args.label, target=args.target,
                                      precision=args.precision, force=args.force):
            say(f"[report] {row['file']}: {row['label']} {row['target']}-{row['precision']} "
                f"({row['source']}, matched by {row['match']}) -> {row['path']}")
    else:
        given = [f"--{k}" for k in ("label", "target", "precision", "force") if getattr(args, k, None)]
        if given:
            from hrnet_edge.errors import ConfigError

            raise ConfigError(f"{', '.join(given)}: only with --add FILE ...")
    rows = [read_json(p) for p in sorted(run.checks.glob("*.json"))]
    build_report(run, rows)
    print(run.report_md.read_text())
    return 0


def cmd_bundle(args) -> int:
    from hrnet_edge.pipeline.bundle import make_bundle

    s = make_bundle(args.run or DEFAULT_RUN, args.artifacts, args.out, samples=args.samples, force=args.force)
    say(f"[bundle] {s['out']}: {s['files']} files, {s['bytes'] / 1e6:.2f} MB; artifacts "
        f"{', '.join(s['artifacts'])}; {s['samples']} samples with expected outputs")
    return 0


def cmd_pipeline(args) -> int:
    """Every stage in order into one run directory; completed stages are reused."""
    t0 = time.time()
    run, cfg = _init(args, allow_new=True)
    say(f"[pipeline] run directory {run.root}, model {cfg.model} {dict(cfg.model_overrides)}")
    ns = argparse.Namespace(run=str(run.root), no_progress=args.no_progress, force=args.force,
                            targets=None, config=None, model=None, verbose=args.verbose)
    seconds = {}
    with _run_log(args, run, "pipeline") as result:
        if not args.verbose:
            say(f"[pipeline] what the libraries print goes to {run.root / 'logs' / 'pipeline.log'} "
                "(--verbose shows it)")
        early = None
        try:
            for name, stage in (("train", cmd_train), ("qat", cmd_qat), ("export", cmd_export), ("check", cmd_check)):
                t = time.time()
                rc = stage(ns, early) if name == "export" else stage(ns)  # the check's exit status is the pipeline's
                seconds[name] = time.time() - t
                if name == "train":
                    # the float exports need only the checkpoint: they run beside QAT
                    from hrnet_edge.pipeline.stages import start_early_exports

                    early = start_early_exports(run, cfg, force=args.force)
                    if early is not None:
                        say(f"[pipeline] exporting {len(early.pairs)} float artifacts while QAT runs")
                        # the worker's staging folders are not leftovers: the next stages
                        # must not clear them away (the run was tidied before training)
                        ns.tidy = False
                        ns.qat_beside = early  # the worker has the other core while it runs
                elif name == "export":
                    early, ns.tidy, ns.qat_beside = None, True, None
        except BaseException:
            if early is not None:
                early.stop()
            raise
        result["rc"] = rc
    split = ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
    say(f"[pipeline] done in {time.time() - t0:.0f} s ({split}); report: {run.report_md} "
        f"(and report.json, pareto.png)")
    return rc
