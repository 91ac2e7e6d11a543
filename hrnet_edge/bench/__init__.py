"""``hrnet-edge bench``: the reference benchmark of every runtime x precision.

One harness times, on one machine and one input:

* PyTorch eager (the baseline every ratio divides),
* the project's exports (``converters``: ONNX Runtime, OpenVINO, LiteRT, ExecuTorch;
  INT8 from an NNCF-quantized model with its ranges carried where the route allows),
  with TFLite and ExecuTorch in both upsampling forms (``interpolate``: several
  XNNPACK partitions; ``broadcast``: one),
* a user's by-hand default export with each tool's documented calls
  (:mod:`hrnet_edge.bench.byhand`),

after measuring this machine's GEMM peak per precision (:mod:`hrnet_edge.bench.peak`).
It prints p50/p90, GFLOP/s, % of the peak of the precision that ran, speed-up over
eager, INT8 over FP32 on the same runtime, and project over by-hand; writes
``bench.json``, ``bench.md`` and ``bench.png``. Weights are seeded random with
BatchNorm statistics settled on photo crops: latency does not depend on training, and
the INT8 calibration sees realistic activations. Nothing here is a test: the figures
belong to the CPU named in the output.
"""
from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hrnet_edge.console import say

DEFAULT_MODEL = "hrnet_w18_small_v1_pose"
DEFAULT_SIZE = (256, 192)
ALL_TARGETS = ("onnx", "openvino", "tflite", "executorch")


@dataclasses.dataclass
class BenchOptions:
    model: str = DEFAULT_MODEL
    input_size: tuple[int, int] = DEFAULT_SIZE
    threads: int = 2
    warmup: int = 10
    iterations: int = 50
    targets: tuple[str, ...] = ALL_TARGETS
    by_hand: bool = True
    calibration_images: int = 32
    seed: int = 0
    profile: bool = False  # per-op profiles of the project's ONNX Runtime and OpenVINO rows


def prepare_model(name: str, input_size: tuple[int, int], images: np.ndarray, seed: int = 0):
    """Seeded random weights; BatchNorm running statistics settled on ``images`` (so the
    activations have realistic ranges), then eval mode."""
    import torch

    from hrnet_edge.models.registry import create_model

    torch.manual_seed(seed)
    model = create_model(name, input_size=tuple(input_size))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the settling batches
    model.train()
    with torch.no_grad():
        for i in range(0, len(images), 8):
            model(torch.from_numpy(images[i:i + 8]))
    return model.eval()


class Bench:
    """Builds the rows, then times them together; every export or load failure becomes
    a row with its error.

    Timing is round-robin: after each row's warm-up, ``rounds`` passes go over every
    row in turn, ``iterations / rounds`` calls each, so a slow minute of the machine
    (another process, a frequency change) spreads over all rows instead of landing on
    whichever was being timed.
    """

    def __init__(self, opts: BenchOptions, work: Path, rounds: int = 5):
        self.opts, self.work, self.rows, self.rounds = opts, work, [], rounds
        self._fns: list[Callable | None] = []

    def row(self, runtime: str, precision: str, source: str, make: Callable[[], tuple[Any, dict]],
            x: np.ndarray, how: str = "") -> dict:
        label = f"{runtime} {precision} ({source})"
        t0 = time.perf_counter()
        row: dict[str, Any] = {"runtime": runtime, "precision": precision, "source": source, "how": how}
        fn = None
        try:
            fn, extra = make()
            row["build_s"] = round(time.perf_counter() - t0, 1)
            row.update(extra)
            fn(x)  # the first call, apart: allocation and JIT happen here
            say(f"[bench] built {label:<46} in {row['build_s']:5.1f} s")
        except Exception as exc:  # a tool's failure is a result of the benchmark, not its end
            fn = None
            text = str(exc).strip()
            row["error"] = f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"
            row["traceback"] = traceback.format_exc(limit=6)
            say(f"[bench] {label:<52} failed: {row['error']}")
        self.rows.append(row)
        self._fns.append(fn)
        return row

    def time_all(self, x: np.ndarray) -> None:
        """Warm every row up, then time them round-robin; percentiles in milliseconds."""
        live = [(r, f) for r, f in zip(self.rows, self._fns) if f is not None]
        say(f"[bench] timing {len(live)} rows: {self.opts.warmup} warm-ups each, then "
            f"{self.opts.iterations} runs each in {self.rounds} interleaved rounds")
        for _, fn in live:
            for _ in range(self.opts.warmup):
                fn(x)
        times: dict[int, list[float]] = {id(r): [] for r, _ in live}
        per_round = [self.opts.iterations // self.rounds + (1 if i < self.opts.iterations % self.rounds else 0)
                     for i in range(self.rounds)]
        for n in per_round:
            for r, fn in live:
                for _ in range(n):
                    t0 = time.perf_counter()
                    fn(x)
                    times[id(r)].append((time.perf_counter() - t0) * 1e3)
        for r, _ in live:
            t = np.asarray(times[id(r)])
            r.update({"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
                      "mean_ms": float(t.mean()), "min_ms": float(t.min()), "iterations": int(len(t)),
                      "warmup": self.opts.warmup})


def validate_options(opts: BenchOptions):
    """The model config the options describe; ConfigError for a bad model, size or target."""
    from hrnet_edge.errors import ConfigError
    from hrnet_edge.models.registry import get_config

    cfg = get_config(opts.model, input_size=tuple(opts.input_size))
    unknown = sorted(set(opts.targets) - set(ALL_TARGETS))
    if unknown:
        raise ConfigError(f"unknown bench target(s) {unknown}; valid: {', '.join(ALL_TARGETS)}")
    if opts.threads < 1 or opts.iterations < 1 or opts.warmup < 0:
        raise ConfigError("threads and iterations must be >= 1 and warmup >= 0, got "
                          f"{opts.threads}, {opts.iterations}, {opts.warmup}")
    return cfg


def run_bench(opts: BenchOptions, out_dir: Path) -> dict[str, Any]:
    """Run the benchmark; write ``bench.json``, ``bench.md`` and ``bench.png`` into ``out_dir``."""
    import torch

    from hrnet_edge.bench import byhand
    from hrnet_edge.bench.peak import cpu_facts, measure_peaks
    from hrnet_edge.bench.table import derive, write_outputs
    from hrnet_edge.data.natural import natural_images
    from hrnet_edge.models.registry import count_macs
    from hrnet_edge.runs import environment

    cfg = validate_options(opts)
    torch.set_num_threads(opts.threads)
    cpu = cpu_facts()
    say(f"[bench] {cpu['name']} ({cpu['logical_cpus']} logical CPUs; {' '.join(cpu['features']) or 'no AVX2'}), "
        f"{opts.threads} threads")
    peaks = measure_peaks(opts.threads)
    say("[bench] GEMM peak: " + ", ".join(
        f"{k} {v['gflops']} {v.get('unit', 'GFLOP/s')}" + (f" ({v['note']})" if v.get("note") else "")
        for k, v in peaks.items()))
    size = tuple(cfg.input_size)
    calib = natural_images(opts.calibration_images, size, seed=opts.seed + 1)
    x = natural_images(1, size, seed=opts.seed + 7)
    model = prepare_model(opts.model, size, natural_images(64, size, seed=opts.seed + 3), opts.seed)
    example = torch.from_numpy(x)
    macs = count_macs(model, size)
    say(f"[bench] {opts.model} {size[0]}x{size[1]}: {macs / 1e9:.3f} GMAC = {2 * macs / 1e9:.3f} GFLOP per image")

    with tempfile.TemporaryDirectory(prefix="hrnet-edge-bench-") as tmp:
        work = Path(tmp)
        bench = Bench(opts, work)

        def eager():
            def run(a):
                with torch.no_grad():
                    return model(torch.from_numpy(a))
            return run, {}

        bench.row("pytorch", "fp32", "eager", eager, x, "model(x) under torch.no_grad()")
        _project_rows(bench, model, calib, example, x)
        if opts.by_hand:
            _by_hand_rows(bench, byhand, model, calib, example, x)
        bench.time_all(x)
        if opts.profile:
            _profile_rows(bench.rows, x, opts.threads)
        rows = bench.rows
        for r in rows:
            r.pop("_profile", None)

    result = {"schema": "hrnet-edge.bench/1", "model": opts.model, "input_size": list(size),
              "macs": macs, "gflop": 2 * macs / 1e9, "threads": opts.threads, "warmup": opts.warmup,
              "iterations": opts.iterations, "rounds": bench.rounds, "batch": 1, "cpu": cpu, "peaks": peaks,
              "environment": environment(), "rows": derive(rows, peaks, 2 * macs / 1e9)}
    write_outputs(result, out_dir)
    return result


def _project_rows(bench: Bench, model, calib: np.ndarray, example, x: np.ndarray) -> None:
    from converters.base import ExportJob
    from converters.check import runtime_facts
    from converters.metadata import base_metadata
    from converters.onnx import export_onnx
    from converters.registry import get_target
    from hrnet_edge.models.blocks import upsample_form
    from quantization import quantize_model, strip_to_float

    opts, work = bench.opts, bench.work
    meta = base_metadata(model, {}, None)
    size = tuple(model.cfg.input_size)
    state: dict[str, Any] = {}

    def quantized():
        if "qat" not in state:
            say("[bench] NNCF post-training quantization (the INT8 source every project route starts from)")
            state["qat"] = quantize_model(model, calib)
            state["qat_float"] = strip_to_float(state["qat"], example).eval()
        return state["qat"], state["qat_float"]

    def onnx_of(source: str, form: str) -> Path:
        path = work / "intermediate" / f"{source}-{form}.onnx"
        if not path.is_file():
            m = quantized()[1] if source == "qat" else model
            with upsample_form(m, form):
                export_onnx(m, path, size)
        return path

    def project(target: str, precision: str, form: str = "interpolate"):
        def make():
            job = ExportJob(model=model, precision=precision, out_dir=work / "project" / f"{target}-{precision}-{form}",
                            metadata=dict(meta, source_model="qat" if precision == "int8" else "fp32"),
                            calibration=calib)
            if precision == "int8":
                job.qat_model, job.qat_float_model = quantized()
            if target in ("tflite", "executorch"):
                job.options["upsample_form"] = form
            if target == "tflite":
                job.onnx_path = onnx_of("qat" if precision == "int8" else "fp32", form)
            t = get_target(target)
            art = t.export(job)
            runner = t.load(art.path.parent, opts.threads)
            facts = runtime_facts(runner)
            extra: dict[str, Any] = {"form": form} if target in ("tflite", "executorch") else {}
            if facts.get("inference_precision"):
                extra["ran"] = facts["inference_precision"]
            if target == "openvino":
                extra["_profile"] = ("openvino", art.path, facts.get("config", {}).get("INFERENCE_PRECISION_HINT"))
            elif target == "onnx":
                extra["_profile"] = ("onnxruntime", art.path, None)
            info = t.inspect(art.path.parent)
            parts = info.get("delegate_partitions", info.get("delegation", {}).get("partitions"))
            if parts is not None:
                extra["partitions"] = parts
            return runner, extra
        return make

    plan = {"onnx": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8"),
            "tflite": ("fp32", "int8"), "executorch": ("fp32", "int8")}
    for target in opts.targets:
        for precision in plan[target]:
            forms = ("interpolate", "broadcast") if target in ("tflite", "executorch") else ("interpolate",)
            for form in forms:
                source = "project" if form == "interpolate" else "project, one partition"
                bench.row(_RUNTIME[target], precision, source, project(target, precision, form), x,
                          f"hrnet-edge export ({target} {precision}"
                          + (f", upsample_form={form}" if target in ("tflite", "executorch") else "") + ")")


def _profile_rows(rows: list[dict], x: np.ndarray, threads: int) -> None:
    from hrnet_edge.bench.profile import onnxruntime_profile, openvino_profile

    for r in rows:
        src = r.get("_profile")
        if src is None or "error" in r:
            continue
        kind, path, hint = src
        try:
            r["profile"] = (openvino_profile(path, x, threads, hint) if kind == "openvino"
                            else onnxruntime_profile(path, x, threads))
            top = r["profile"]["ops"][0]
            say(f"[bench] profiled {r['runtime']} {r['precision']}: {top['op']} {100 * top['share']:.0f} %")
        except Exception as exc:  # a profiler failure is reported, the benchmark goes on
            r["profile"] = {"error": f"{type(exc).__name__}: {exc}"}


_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert", "executorch": "executorch"}


def _by_hand_rows(bench: Bench, byhand, model, calib: np.ndarray, example, x: np.ndarray) -> None:
    opts, work = bench.opts, bench.work
    work = work / "byhand"
    work.mkdir(exist_ok=True)
    th = opts.threads
    m = copy.deepcopy(model).eval()
    plan = {
        "onnx": [("fp32", lambda: byhand.onnx_fp32(m, example, work, th), ("onnx", "fp32")),
                 ("int8", lambda: byhand.onnx_int8(m, example, work, th, calib), ("onnx", "int8"))],
        "openvino": [("default", lambda: byhand.openvino_default(m, example, work, th), ("openvino", "default")),
                     ("int8", lambda: byhand.openvino_int8(m, example, work, th, calib), ("openvino", "int8"))],
        "tflite": [("fp32", lambda: byhand.tflite(m, example, work, th, None), ("tflite", "fp32")),
                   ("int8", lambda: byhand.tflite(m, example, work, th, calib), ("tflite", "int8"))],
        "executorch": [("fp32", lambda: byhand.executorch(m, example, work, th, None), ("executorch", "fp32")),
                       ("int8", lambda: byhand.executorch(m, example, work, th, calib), ("executorch", "int8"))],
    }
    for target in opts.targets:
        for precision, make, key in plan[target]:
            bench.row(_RUNTIME[target], precision, "by hand", make, x, byhand.HOW[key])
