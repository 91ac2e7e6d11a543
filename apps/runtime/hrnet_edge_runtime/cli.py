"""``hrnet-edge-run``: time one artifact on this device and write a device result.

    hrnet-edge-run ARTIFACT_DIR [--device CPU] [--threads N] [--hint latency|throughput]
                   [--warmup 10] [--iterations 100] [--images DIR [--labels FILE]] [--profile]
                   [--label NAME] [--skip-sha256] [--samples DIR] --out result.json

Order: read and check ``metadata.json``, verify the sha256 of the model file(s), read
the images (if any), open the artifact (timed: load), run once (timed: first
inference), warm up, time the iterations, record peak memory, then (``--profile``)
open it again with the runtime's profiler for per-op times, so profiling never slows
the timed runs. With ``--samples`` (a bundle's ``samples/`` folder), the same opened
artifact then runs the bundle's sample inputs and its outputs are compared with the
host's (``samples`` in the result; see :mod:`hrnet_edge_runtime.samples`). With
``--labels`` (checked before anything runs), the same opened artifact then scores the
labelled pictures of ``--images`` with the task metric of the host checks (``metric``,
``metric_name`` and ``evaluation`` in the result; see :mod:`hrnet_edge_runtime.labelled`).
The result is validated and written atomically.

Exit codes: 0 done; 2 bad input (a missing folder, not an artifact, a sha256
mismatch, a bad number, an unknown device, a runtime not installed, samples of another
artifact, labels that are missing, malformed or do not match the pictures, a task with
no metric, pycocotools missing for a COCO metric), with one line on stderr and no file
written; 1 the runtime failed while running, or a sample's output is outside the
tolerance (the result is still written, one line names the sample).
"""
from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from typing import Sequence

from hrnet_edge_runtime import __version__
from hrnet_edge_runtime.adapters import HINTS, adapter_class, open_adapter
from hrnet_edge_runtime.errors import RuntimeErrorBase, UsageError
from hrnet_edge_runtime.host import host_facts
from hrnet_edge_runtime.inputs import image_to_input, list_images, random_input, read_image
from hrnet_edge_runtime.labelled import load_labels
from hrnet_edge_runtime.metadata import load_artifact, verify_sha256
from hrnet_edge_runtime.result import build_result, write_result
from hrnet_edge_runtime.samples import SampleMismatch, load_samples, verify_samples
from hrnet_edge_runtime.stats import check_counts, measure

PROG = "hrnet-edge-run"
NOT_REQUESTED = {"available": False, "reason": "not requested (run with --profile)"}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        _fail(f"{message} (see {PROG} --help)")


def _fail(message: str, code: int = 2):
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Time an hrnet-edge artifact on this device (latency, load, memory, "
                                       "optional per-op profile) and write a device result JSON.")
    p.add_argument("artifact_dir", metavar="ARTIFACT_DIR", help="an export folder: model file(s) + metadata.json")
    p.add_argument("--out", required=True, help="the result JSON to write (atomically)")
    p.add_argument("--device", default=None,
                   help="the runtime's device (default CPU): OpenVINO CPU/GPU/NPU/AUTO; ONNX Runtime CPU/CUDA/"
                        "TENSORRT/... or an execution provider name; Core ML ALL/CPU/GPU/ANE")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the runtime's own)")
    p.add_argument("--hint", default="latency", choices=HINTS, help="OpenVINO performance hint (default latency)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs after the first (default 10)")
    p.add_argument("--iterations", type=int, default=100, help="timed runs (default 100)")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="time on these .jpg/.png pictures (resized to the input, cycled) instead of random pixels")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="labels of the --images pictures: also compute the task metric (pose: COCO "
                        "person_keypoints JSON; det: COCO instances JSON; seg: a folder of <stem>.png masks; "
                        "cls: a CSV file,label or a JSON {file: label})")
    p.add_argument("--profile", action="store_true", help="also record per-op times (a separate, untimed pass)")
    p.add_argument("--label", default=None, help="a name for this device in the result (default: the host name)")
    p.add_argument("--skip-sha256", action="store_true", help="do not verify the model file hashes")
    p.add_argument("--samples", default=None, metavar="DIR",
                   help="a bundle's samples/ folder: run its inputs and compare with the host's outputs "
                        "(exit 1 when one is outside the tolerance)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _inputs(art, images: str | None):
    if images is None:
        return [random_input(art, seed=0)], "random"
    files = list_images(images)
    return [image_to_input(read_image(f), art) for f in files], f"images:{len(files)}"


def run(args: argparse.Namespace) -> dict:
    """Do what :func:`main` does, raising this package's errors; returns the result."""
    check_counts(args.warmup, args.iterations)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name the result file")
    art = load_artifact(args.artifact_dir)
    if not args.skip_sha256:
        verify_sha256(art)
    if args.labels is not None and args.images is None:
        raise UsageError("--labels needs --images DIR: the labelled pictures")
    inputs, described = _inputs(art, args.images)
    labelled = load_labels(art, args.images, args.labels) if args.labels is not None else None
    import_ms = adapter_class(art.target).import_runtime()  # kept out of load_ms
    options = dict(device=args.device, threads=args.threads, hint=args.hint)
    if args.samples is not None:
        load_samples(args.samples, art)  # bad samples fail before anything runs
    adapter, measured = measure(lambda: open_adapter(art, **options), inputs, args.warmup, args.iterations)
    checked = scored = None
    try:
        runtime = adapter.info()
        if args.samples is not None:
            checked = verify_samples(adapter, args.samples)
        if labelled is not None:
            scored = labelled.evaluate(adapter.run)
    finally:
        adapter.close()
    profile = NOT_REQUESTED
    if args.profile:
        with open_adapter(art, profile=True, **options) as profiler:
            profile = profiler.profile(inputs[0])
    result = build_result(artifact=art, measured=measured, runtime=runtime, host=host_facts(),
                          profile=profile, inputs=described, label=args.label or socket.gethostname(),
                          threads=args.threads, sha256_verified=not args.skip_sha256)
    result["runtime_import_ms"] = import_ms
    if checked is not None:
        result["samples"] = {k: checked[k] for k in ("count", "max_abs_over_range", "correlation", "passed",
                                                     "tolerance")}
    if scored is not None:
        result.update(scored)
    write_result(out, result)
    if checked is not None and not checked["passed"]:
        raise SampleMismatch(f"{checked['failed']} (result written to {out})")
    return result


def summary(result: dict, out: str) -> str:
    """One line: what ran where, p50, p90, load and peak memory."""
    rt, lat = result["runtime"], result["latency"]
    peak = result["peak_rss_mb"]
    threads = f", {lat['threads']} threads" if lat["threads"] else ""
    checked = result.get("samples")
    samples = (f", {checked['count']} samples {'passed' if checked['passed'] else 'FAILED'}"
               if checked else "")
    if result.get("metric_name"):
        value = result["metric"].get(result["metric_name"])
        samples += (f", {result['metric_name']} {'n/a' if value is None else format(value, '.4f')} on "
                    f"{result['evaluation']['images']} labelled images")
    return (f"{result['target']}-{result['precision']} ({result['task']}) on {rt.get('device')} "
            f"[{rt['name']} {rt.get('version')}{threads}]: p50 {lat['p50_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms, "
            f"load {result['load_ms']:.1f} ms, peak RSS {'%.1f MB' % peak if peak is not None else 'n/a'}"
            f"{samples} -> {out}")


def main(argv: Sequence[str] | None = None) -> int:
    """The console script; returns the exit code (0, 1 or 2)."""
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except RuntimeErrorBase as exc:
        _fail(str(exc), 2)
    except SampleMismatch as exc:
        _fail(str(exc), 1)
    except Exception as exc:  # noqa: BLE001 - a runtime failing mid-run: one line, not a traceback
        _fail(f"the runtime failed: {type(exc).__name__}: {exc}", 1)
    print(summary(result, args.out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
