"""The pieces of a device bundle: artifact files, the runtime's source, the README, the zip.

A bundle is one zip a user copies to a device::

    README.md                               commands per device, for these artifacts only
    artifacts/<target>-<precision>/...      model file(s) + metadata.json, as exported
    runtime/...                             apps/runtime (pip install "./runtime[extra]")
    samples/manifest.json, samples/*.png, samples/<target>-<precision>/*.npy|*.json

:func:`write_zip` makes the zip deterministic: entries sorted by name, one fixed
timestamp and mode, one compression level, so the same inputs give the same bytes.
It writes a temporary file beside ``out`` and renames it, so a failure leaves nothing.
The run-directory side (choosing the artifacts, computing the samples) is in
:mod:`hrnet_edge.pipeline.bundle`.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

from hrnet_edge.errors import HRNetEdgeError

RUNTIME_DIR = Path(__file__).resolve().parents[1] / "apps" / "runtime"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
SKIP_DIRS = {"__pycache__", "build", "dist", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")
# the hrnet-edge-runtime extra (apps/runtime/pyproject.toml) of each target
EXTRAS = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert", "executorch": "executorch",
          "coreml": "coreml"}


class BundleError(HRNetEdgeError, ValueError):
    """A bundle that cannot be made: an unknown or corrupt artifact, a bad option,
    an existing output without ``--force``."""


# ---------------------------------------------------------------------- entries


def _walk(root: Path) -> list[Path]:
    """Files under ``root`` (sorted by relative path), without caches or build output."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(SKIP_SUFFIXES))
        out += [Path(dirpath) / f for f in filenames if not f.endswith(SKIP_SUFFIXES)]
    return sorted(out, key=lambda p: p.relative_to(root).parts)


def artifact_entries(artifact) -> dict[str, bytes]:
    """``artifacts/<target>-<precision>/...``: ``metadata.json`` and the model file(s)
    it lists (a Core ML package folder with everything in it)."""
    prefix = f"artifacts/{artifact.target}-{artifact.precision}"
    entries = {f"{prefix}/metadata.json": (artifact.dir / "metadata.json").read_bytes()}
    for f in artifact.files:
        if f.path.is_dir():
            for p in _walk(f.path):
                entries[f"{prefix}/{f.name}/{p.relative_to(f.path).as_posix()}"] = p.read_bytes()
        else:
            entries[f"{prefix}/{f.name}"] = f.path.read_bytes()
    return entries


def runtime_entries(runtime_dir: Path = RUNTIME_DIR) -> dict[str, bytes]:
    """``runtime/...``: the device runtime's source (no caches, build output or egg-info)."""
    if not (runtime_dir / "pyproject.toml").is_file():
        raise BundleError(f"{runtime_dir}: the device runtime's source is missing (no pyproject.toml)")
    return {f"runtime/{p.relative_to(runtime_dir).as_posix()}": p.read_bytes() for p in _walk(runtime_dir)}


# ---------------------------------------------------------------------- the zip


def check_out(out: Path, force: bool) -> None:
    """BundleError when ``out`` is a folder, or exists and ``force`` is False."""
    if out.is_dir():
        raise BundleError(f"--out {out} is a folder; name the zip file")
    if out.exists() and not force:
        raise BundleError(f"--out {out} exists; --force replaces it")


def write_zip(out: Path, entries: Mapping[str, bytes], force: bool = False) -> Path:
    """Write ``entries`` ({name: bytes}) to ``out`` deterministically and atomically.

    Raises:
        BundleError: ``out`` exists and ``force`` is False, or is a folder.
    """
    out = Path(out)
    check_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w") as zf:
            for name in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # unix, whatever the host, so the mode bits below apply
                info.external_attr = (0o100644 & 0xFFFF) << 16
                zf.writestr(info, entries[name], compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


# ---------------------------------------------------------------------- the README


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _code(lines: Iterable[str]) -> list[str]:
    return ["```bash", *lines, "```", ""]


def build_readme(run_label: str, artifacts: list, samples: dict) -> str:
    """The bundle's README.md: what is in it and, for these artifacts only, the commands
    per device. ``samples`` is the samples manifest (``artifacts`` -> {host, reason, ...})."""
    names = [f"{a.target}-{a.precision}" for a in artifacts]
    targets = {a.target for a in artifacts}
    by_target = {t: [a for a in artifacts if a.target == t] for t in sorted(targets)}
    first = artifacts[0]
    count = samples["count"]
    L = [f"# hrnet-edge bundle: {first.variant or 'model'} ({first.task}), run {run_label}", "",
         "Made by `hrnet-edge bundle`. The only thing run on the machine that made it is the host side "
         "of the samples: each artifact ran the sample inputs on that machine's CPU through the same "
         "runtime code as `hrnet-edge-run`. Every device section below is **not run here**: the commands "
         "are what to try, not results.", "",
         "| artifact | task | input | size | sha256 | expected sample outputs |", "|---|---|---|---|---|---|"]
    for a, name in zip(artifacts, names):
        entry = samples["artifacts"][name]
        host = entry.get("host")
        made = (f"computed on the host CPU with {host['runtime']} {host['version']}" if host
                else f"none: {entry.get('reason')}".replace("|", "\\|"))
        spec = a.input
        L.append(f"| `artifacts/{name}` | {a.task} | {spec.dtype} {spec.layout} {'x'.join(map(str, spec.shape))} "
                 f"| {_size(a.size_bytes)} | `{a.sha256[:16]}...` | {made} |")
    L += ["", f"`samples/` holds {count} validation inputs of the run (`NNN.png` to look at; "
          "`<artifact>/NNN.input.npy`: the exact array fed, `NNN.expected.npy`: the raw output, "
          "`NNN.decoded.json`: the decoded result). `hrnet-edge-run ... --samples samples` runs them and compares: "
          "fp32 within 1e-4 of the output range, fp16/bf16 within 3e-2, int8/int8u8 a correlation above 0.99 "
          "and a largest difference under 0.1 of the range (another CPU rounds differently). It writes "
          "`samples` {count, max_abs_over_range, correlation, passed} into the result and exits 1 naming "
          "the first sample outside the tolerance.", ""]

    cpu = [a for a in artifacts if a.target != "coreml"]
    if cpu:
        extras = ",".join(sorted({EXTRAS[a.target] for a in cpu}))
        L += ["## Linux, NVIDIA Jetson or another board: the CPU (not run here)", "",
              "Python 3.10 or newer; the runtime needs numpy and Pillow plus one runtime per extra.", ""]
        L += _code(["python3 -m venv .venv && . .venv/bin/activate",
                    f'pip install "./runtime[{extras}]"',
                    *(f"hrnet-edge-run artifacts/{a.target}-{a.precision} --samples samples --threads 4 "
                      f"--out result-{a.target}-{a.precision}.json" for a in cpu)])
        if "executorch" in targets:
            L += ["ExecuTorch's Python runtime needs PyTorch: the `executorch` extra installs it.", ""]
    if "onnx" in targets:
        L += ["## NVIDIA Jetson: TensorRT (not run here)", "",
              "`trtexec` comes with JetPack (`/usr/src/tensorrt/bin/trtexec`). INT8 ONNX artifacts carry "
              "their own Q/DQ scales (`--int8` uses them; `--fp16` lets the other layers run in fp16). Its "
              "timings are printed, not in a file that `hrnet-edge report --add` reads; for a result file run "
              "`hrnet-edge-run` through ONNX Runtime's TensorRT or CUDA provider (`onnxruntime-gpu` built for "
              "JetPack).", ""]
        lines = []
        for a in by_target["onnx"]:
            flags = "--int8 --fp16" if a.precision in ("int8", "int8u8") else "--fp16"
            lines.append(f"trtexec --onnx=artifacts/onnx-{a.precision}/model.onnx {flags} --warmUp=500 "
                         f"--iterations=200 --exportTimes=trt-onnx-{a.precision}.json")
        for a in by_target["onnx"]:
            lines.append(f"hrnet-edge-run artifacts/onnx-{a.precision} --device TENSORRT --samples samples "
                         f"--out result-jetson-trt-onnx-{a.precision}.json")
        L += _code(lines)
        if any(a.precision == "int8u8" for a in by_target["onnx"]):
            L += ["`onnx-int8u8` takes uint8 pixels; older TensorRT releases refuse uint8 inputs.", ""]
    if "openvino" in targets:
        L += ["## Intel NPU: OpenVINO (not run here)", "",
              "Needs Intel's NPU driver (Linux: intel/linux-npu-driver; Windows: Intel's NPU driver) on a "
              "processor with an NPU (Core Ultra). The NPU computes in fp16, so fp32 artifacts may miss "
              "the fp32 sample tolerance there; `--device GPU` runs on Intel graphics.", ""]
        lines = ['pip install "./runtime[openvino]"']
        for a in by_target["openvino"]:
            lines.append(f"hrnet-edge-run artifacts/openvino-{a.precision} --device NPU --samples samples "
                         f"--out result-npu-openvino-{a.precision}.json")
        for a in by_target["openvino"]:
            lines += [f"mkdir -p ov-npu-{a.precision} && benchmark_app -m artifacts/openvino-{a.precision}/model.xml "
                      f"-d NPU -hint latency -json_stats -report_type no_counters -report_folder ov-npu-{a.precision}"]
        L += _code(lines)
    if "tflite" in targets or "executorch" in targets:
        L += ["## Android (not run here)", ""]
    if "tflite" in targets:
        L += ["LiteRT's `benchmark_model` (the prebuilt Android arm64 binary of LiteRT's benchmark tool) "
              "prints its timings; `hrnet-edge report --add` does not read that text. On an aarch64 Linux "
              "board `litert-benchmark --model ... --result_json r.json` writes a file it reads.", ""]
        lines = ["adb push benchmark_model /data/local/tmp/ && adb shell chmod +x /data/local/tmp/benchmark_model"]
        for a in by_target["tflite"]:
            lines += [f"adb push artifacts/tflite-{a.precision}/model.tflite "
                      f"/data/local/tmp/tflite-{a.precision}.tflite",
                      f"adb shell /data/local/tmp/benchmark_model --graph=/data/local/tmp/tflite-{a.precision}.tflite "
                      "--num_threads=4 --warmup_runs=10 --num_runs=100"]
        L += _code(lines)
    if "executorch" in targets:
        L += ["For `.pte` files: ExecuTorch's Android benchmark app (`extension/benchmark/android/benchmark` in "
              "the ExecuTorch repository). Build and install it as its README says, push the model into the "
              "folder it reads, run it, and pull its `benchmark_results.json`.", ""]
        L += _code(f"adb push artifacts/executorch-{a.precision}/model.pte /data/local/tmp/minibench/"
                   f"executorch-{a.precision}.pte" for a in by_target["executorch"])
    if "coreml" in targets:
        L += ["## macOS and iOS: Core ML (not run here)", "",
              "Core ML predicts on macOS only (`--device` ALL, CPU, GPU or ANE). On iOS: open the "
              "`.mlpackage` in Xcode, Performance tab, and create a report on a connected iPhone or iPad; "
              "Xcode's report is not a file `hrnet-edge report --add` reads.", ""]
        lines = ['pip install "./runtime[coreml]"']
        for a in by_target["coreml"]:
            has = bool(samples["artifacts"][f"coreml-{a.precision}"].get("samples"))
            check = " --samples samples" if has else ""
            lines.append(f"hrnet-edge-run artifacts/coreml-{a.precision} --device ALL{check} "
                         f"--out result-coreml-{a.precision}.json")
        a = by_target["coreml"][0]
        feed = ("Image.open('samples/000.png')" if a.input.image
                else f"np.load('samples/coreml-{a.precision}/000.input.npy')")
        lines.append(f"python -c \"import coremltools as ct, numpy as np; from PIL import Image; "
                     f"m = ct.models.MLModel('artifacts/coreml-{a.precision}/{a.files[0].name}'); "
                     f"print({{k: v.shape for k, v in m.predict({{'{a.input.name}': {feed}}}).items()}})\"")
        L += _code(lines)
        if not all(samples["artifacts"][f"coreml-{a.precision}"].get("samples") for a in by_target["coreml"]):
            L += ["No expected outputs for Core ML: this host could not run it, so `--samples` is left out.", ""]
    L += ["## Bring the results back", "", "On the machine with the run:", ""]
    lines = [f"hrnet-edge report --run {run_label} --add result-*.json"]
    if "openvino" in targets:
        lines.append(f"hrnet-edge report --run {run_label} --add ov-npu-*/benchmark_report.json --label npu")
    if "executorch" in targets:
        lines.append(f"hrnet-edge report --run {run_label} --add benchmark_results.json --precision "
                     f"{by_target['executorch'][0].precision}")
    L += _code(lines)
    L += ["Results are matched to the run's artifacts by sha256 and shown beside the host's numbers in "
          "`report.md`.", ""]
    return "\n".join(L)
