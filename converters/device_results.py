"""Device results: latency measured on users' own devices, merged into a run's report.

Four formats are read, told apart by their content:

* ``hrnet-edge-run`` results (schema ``hrnet-edge-device-result``, version 1), which
  carry the artifact's sha256;
* OpenVINO ``benchmark_app -json_stats`` reports (``benchmark_report.json``; the Python
  tool writes ``execution_results`` as strings under readable names, the C++ tool numbers
  under snake_case names);
* LiteRT ``litert-benchmark --result_json`` files;
* the ExecuTorch Android benchmark app's ``benchmark_results.json`` (a list of
  ``{benchmarkModel, metric, actualValue, targetValue, deviceInfo}`` objects).

Each becomes one device row with the latency statistics the tool reports and no others
(a tool that gives no median gets no p50). A row is matched to an exported artifact of
the run by its sha256, else by the model path the tool reports (``<target>-<precision>/
model.<ext>``), else by ``--target``/``--precision``. Rows are kept one file each in
``runs/<run>/devices/<label>-<target>-<precision>-<source>.json``, so adding the same
result again replaces its row.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from hrnet_edge_runtime.result import SCHEMA, SCHEMA_VERSION

from converters.base import PRECISIONS
from converters.registry import TARGETS
from hrnet_edge.errors import HRNetEdgeError
from hrnet_edge.io import read_json, write_json

KNOWN_SCHEMA_VERSIONS = (SCHEMA_VERSION,)
ACCEPTED = ("an hrnet-edge-run result (schema hrnet-edge-device-result, version "
            f"{', '.join(map(str, KNOWN_SCHEMA_VERSIONS))}), OpenVINO benchmark_app -json_stats "
            "benchmark_report.json, LiteRT litert-benchmark --result_json, or the ExecuTorch Android "
            "benchmark app's benchmark_results.json")
# the targets each tool can have measured (benchmark_app also reads ONNX files)
TOOL_TARGETS = {"benchmark_app": ("openvino", "onnx"), "litert-benchmark": ("tflite",),
                "executorch-minibench": ("executorch",)}
SUFFIX_TARGET = {".xml": "openvino", ".onnx": "onnx", ".tflite": "tflite", ".pte": "executorch"}
LATENCY_MS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "trimmed_mean_ms", "min_ms", "max_ms", "std_ms")
_SHA = re.compile(r"([0-9a-f]{64})+")
_FOLDER = re.compile(rf"({'|'.join(TARGETS)})-({'|'.join(PRECISIONS)})")


class DeviceResultError(HRNetEdgeError, ValueError):
    """A device result that cannot be read or that does not fit the run."""


def _err(path, message: str) -> DeviceResultError:
    return DeviceResultError(" ".join(f"{path}: {message}".split()))


def _number(value: Any, name: str, path, required: bool = False) -> float | None:
    """A finite, non-negative number from a JSON number or a numeric string."""
    if value is None and not required:
        return None
    try:
        out = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
    except ValueError:
        out = None
    if out is None or not math.isfinite(out) or out < 0:
        raise _err(path, f"field {name!r} must be a non-negative number, got {value!r}")
    return out


def _pick(d: dict, *names: str) -> Any:
    return next((d[n] for n in names if d.get(n) not in (None, "")), None)


def _clean(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None and v != ""}


# ----------------------------------------------------------------------- readers


def detect_format(data: Any) -> str | None:
    """The source a parsed JSON document comes from, or None."""
    if isinstance(data, dict):
        if "schema" in data:
            return "hrnet-edge-run" if data["schema"] == SCHEMA else None
        if isinstance(data.get("execution_results"), dict) and ("cmd_options" in data or "configuration_setup" in data):
            return "benchmark_app"
        if isinstance(data.get("latency"), dict) and "accelerators" in data and "model" in data:
            return "litert-benchmark"
    if isinstance(data, list) and data and all(isinstance(e, dict) and "metric" in e and "actualValue" in e
                                               for e in data):
        return "executorch-minibench"
    return None


def _read_hrnet_edge_run(d: dict, path) -> tuple[dict, dict]:
    version = d.get("schema_version")
    if version not in KNOWN_SCHEMA_VERSIONS:
        raise _err(path, f"{SCHEMA} schema_version {version!r} is not one this version of hrnet-edge reads "
                         f"(known: {', '.join(map(str, KNOWN_SCHEMA_VERSIONS))})")
    for key in ("label", "target", "precision", "artifact_sha256"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise _err(path, f"field {key!r} must be a non-empty string, got {d.get(key)!r}")
    if not _SHA.fullmatch(d["artifact_sha256"]):
        raise _err(path, f"field 'artifact_sha256' is not one or more sha256 hex digests: {d['artifact_sha256']!r}")
    for key in ("latency", "runtime", "host"):
        if not isinstance(d.get(key), dict):
            raise _err(path, f"field {key!r} must be an object, got {d.get(key)!r}")
    lat = d["latency"]
    latency = {k: _number(lat.get(k), f"latency.{k}", path, required=k == "p50_ms") for k in LATENCY_MS}
    for k in ("iterations", "warmup", "threads"):
        if lat.get(k) is not None:
            if not isinstance(lat[k], int) or isinstance(lat[k], bool) or lat[k] < 0:
                raise _err(path, f"field 'latency.{k}' must be a non-negative integer, got {lat[k]!r}")
            latency[k] = lat[k]
    row = {"label": d["label"], "target": d["target"], "precision": d["precision"], "task": d.get("task"),
           "artifact_sha256": d["artifact_sha256"], "sha256_verified": d.get("sha256_verified"),
           "latency": _clean(latency)}
    for k in ("load_ms", "first_inference_ms", "peak_rss_mb", "rss_before_load_mb"):
        row[k] = _number(d.get(k), k, path)
    row.update(runtime=d["runtime"], host=d["host"], inputs=d.get("inputs"), created=d.get("created"))
    return _clean(row), {}


def _read_benchmark_app(d: dict, path) -> tuple[dict, dict]:
    res, setup, cmd = d["execution_results"], d.get("configuration_setup") or {}, d.get("cmd_options") or {}
    if res.get("error"):
        raise _err(path, f"benchmark_app reported an error: {res['error']}")
    pct = _pick(cmd, "-latency_percentile", "latency_percentile") or _pick(res, "percentile_boundary") or 50
    pct = int(_number(pct, "latency_percentile", path))
    named = "latency (ms)" if pct == 50 else f"latency ({pct} percentile) (ms)"
    latency = {f"p{pct}_ms": _number(_pick(res, named, "latency_median"), named, path),
               "mean_ms": _number(_pick(res, "avg latency", "latency_avg"), "avg latency", path),
               "min_ms": _number(_pick(res, "min latency", "latency_min"), "min latency", path),
               "max_ms": _number(_pick(res, "max latency", "latency_max"), "max latency", path)}
    if latency[f"p{pct}_ms"] is None and latency["mean_ms"] is None:
        raise _err(path, "benchmark_app execution_results hold no latency (a MULTI device reports throughput only)")
    iterations = _pick(res, "total number of iterations", "iterations_num")
    if iterations is not None:
        latency["iterations"] = int(_number(iterations, "total number of iterations", path))
    read_ms = _number(_pick(res, "read model time (ms)", "read_model_time"), "read model time", path)
    compile_ms = _number(_pick(res, "compile model time (ms)", "load_model_time"), "compile model time", path)
    import_ms = _number(_pick(res, "import model time (ms)", "import_model_time"), "import model time", path)
    parts = [v for v in (read_ms, compile_ms, import_ms) if v is not None]
    streams = {k: v for k, v in setup.items() if "streams" in k}
    precision = _pick(setup, "precision")
    runtime = _clean({
        "name": "openvino", "tool": "benchmark_app",
        "device": _pick(setup, "target device", "target_device") or _pick(cmd, "-d", "d") or "CPU",
        "api": _pick(setup, "API", "api"), "hint": _pick(cmd, "-hint", "hint"),
        "inference_only": _pick(setup, "inference_only"), "benchmark_mode": _pick(setup, "benchmark_mode"),
        "batch_size": _pick(setup, "batch size", "batch_size"),
        "infer_requests": _pick(setup, "number of parallel infer requests", "nireq"),
        "precision": None if precision == "UNSPECIFIED" else precision,
        "infer_precision": _pick(cmd, "-infer_precision", "infer_precision"),
        "read_model_ms": read_ms, "compile_model_ms": compile_ms, "import_model_ms": import_ms,
        **streams})
    row = {"label": runtime["device"], "latency": _clean(latency), "load_ms": sum(parts) if parts else None,
           "first_inference_ms": _number(_pick(res, "first inference time (ms)", "first_inference_time"),
                                         "first inference time", path),
           "throughput_fps": _number(_pick(res, "throughput"), "throughput", path),
           "runtime": runtime, "host": {}}
    return _clean(row), {"model_path": _pick(cmd, "-m", "m")}


def _read_litert(d: dict, path) -> tuple[dict, dict]:
    lat = d["latency"]
    latency = {"p50_ms": _number(lat.get("median_ms"), "latency.median_ms", path),
               "mean_ms": _number(lat.get("avg_ms"), "latency.avg_ms", path),
               "min_ms": _number(lat.get("min_ms"), "latency.min_ms", path),
               "max_ms": _number(lat.get("max_ms"), "latency.max_ms", path),
               "std_ms": _number(lat.get("std_ms"), "latency.std_ms", path),
               "p5_ms": _number(lat.get("p5_ms"), "latency.p5_ms", path),
               "p95_ms": _number(lat.get("p95_ms"), "latency.p95_ms", path),
               "iterations": lat.get("num_runs"), "warmup": lat.get("num_warmup_runs"),
               "threads": d.get("num_threads")}
    if latency["p50_ms"] is None and latency["mean_ms"] is None:
        raise _err(path, "litert-benchmark result holds no latency.median_ms or latency.avg_ms")
    accelerators = d.get("accelerators") or []
    runtime = _clean({"name": "litert", "tool": "litert-benchmark", "device": "+".join(map(str, accelerators)),
                      "accelerators": accelerators, "fully_accelerated": d.get("fully_accelerated"),
                      "signature": d.get("signature"), "threads": d.get("num_threads")})
    warm = lat.get("num_warmup_runs")
    row = {"label": runtime.get("device") or "litert", "latency": _clean(latency),
           "load_ms": _number(lat.get("init_ms"), "latency.init_ms", path),
           "first_inference_ms": _number(lat.get("warmup_first_ms"), "latency.warmup_first_ms", path) if warm else None,
           "runtime": runtime, "host": {}}
    return _clean(row), {"model_path": d.get("model")}


def _read_executorch(entries: list, path) -> tuple[dict, dict]:
    models = {json.dumps(e.get("benchmarkModel"), sort_keys=True) for e in entries}
    if len(models) > 1:
        raise _err(path, f"holds results of {len(models)} models; give one model's benchmark_results.json")
    metrics = {e["metric"]: e["actualValue"] for e in entries}
    status = metrics.get("load_status")
    if status not in (None, 0, 0.0):
        raise _err(path, f"the ExecuTorch app could not load the model (load_status {status})")
    if "avg_inference_latency(ms)" not in metrics:
        raise _err(path, f"no 'avg_inference_latency(ms)' metric (has: {', '.join(metrics)})")
    latency = {"mean_ms": _number(metrics["avg_inference_latency(ms)"], "avg_inference_latency(ms)", path),
               "trimmed_mean_ms": _number(metrics.get("trimmean_inference_latency(ms)"),
                                          "trimmean_inference_latency(ms)", path)}
    model = entries[0].get("benchmarkModel") or {}
    info = entries[0].get("deviceInfo") or {}
    # deviceInfo.device is the brand and .arch the phone model (android.os.Build.BRAND / MODEL)
    host = _clean({"brand": info.get("device"), "model": info.get("arch"), "os": info.get("os"),
                   "total_mem_bytes": info.get("totalMem") or None, "avail_mem_bytes": info.get("availMem") or None})
    runtime = _clean({"name": "executorch", "tool": "executorch-minibench", "model_name": model.get("name"),
                      "backend": model.get("backend"), "quantization": model.get("quantization")})
    row = {"label": " ".join(filter(None, (host.get("brand"), host.get("model")))) or "android",
           "latency": _clean(latency),
           "load_ms": _number(metrics.get("model_load_time(ms)"), "model_load_time(ms)", path),
           # PSS growth over the app's idle PSS: not a peak RSS, so kept under its own name
           "pss_delta_mb": _number(metrics.get("ram_pss_usage(mb)"), "ram_pss_usage(mb)", path),
           "runtime": runtime, "host": host}
    return _clean(row), {}


READERS = {"hrnet-edge-run": _read_hrnet_edge_run, "benchmark_app": _read_benchmark_app,
           "litert-benchmark": _read_litert, "executorch-minibench": _read_executorch}


def read_device_file(path: str | Path) -> tuple[dict, dict]:
    """Read one result file: (its device row, before matching; hints such as the model path).

    Raises:
        DeviceResultError: not JSON, not a format this project reads (the message names
            the accepted ones), an unknown schema version, or a field of the wrong type.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _err(path, f"cannot read it as JSON ({exc}); accepted: {ACCEPTED}") from exc
    source = detect_format(data)
    if source is None:
        raise _err(path, f"not a device result this project reads; accepted: {ACCEPTED}")
    row, hints = READERS[source](data, path)
    return {"kind": "device", "source": source, **row, "file": str(path.resolve())}, hints


# ---------------------------------------------------------------------- matching


def run_artifacts(run) -> dict[str, dict]:
    """``{"<target>-<precision>": {target, precision, file, sha256s}}`` of the run's exports;
    ``sha256s`` holds the full hash (model file then companions, as check rows and
    hrnet-edge-run write it) and the model file's own."""
    out: dict[str, dict] = {}
    for meta_path in sorted(Path(run.exports).glob("*/metadata.json")):
        meta, key = read_json(meta_path), meta_path.parent.name
        art = meta.get("artifact") or {}
        target, precision = meta.get("target"), meta.get("precision")
        if not (target and precision and art.get("sha256")):
            continue
        full = art["sha256"] + "".join(c.get("sha256", "") for c in art.get("companions", []))
        out[key] = {"target": target, "precision": precision, "file": art.get("file"),
                    "sha256s": {full, art["sha256"]}}
        check = Path(run.checks) / f"{key}.json"
        if check.is_file() and read_json(check).get("artifact_sha256"):
            out[key]["sha256s"].add(read_json(check)["artifact_sha256"])
    return out


def _known(artifacts: dict) -> str:
    return ", ".join(artifacts) or "none (export first)"


def match_row(row: dict, hints: dict, artifacts: dict, *, target: str | None = None,
              precision: str | None = None, force: bool = False, run_name: str = "the run") -> dict:
    """Set the row's target, precision and ``match`` (sha256, path, options or unmatched)."""
    path = row["file"]
    sha = row.get("artifact_sha256")
    if sha:
        hits = [k for k, a in artifacts.items() if sha in a["sha256s"]]
        key = f"{row['target']}-{row['precision']}"
        if hits:
            hit = key if key in hits else hits[0]
            if hit != key:
                raise _err(path, f"its artifact_sha256 is that of {hit} in {run_name}, but it says {key}")
            return {**row, "match": "sha256"}
        if not force:
            raise _err(path, f"its artifact_sha256 {sha[:12]}... ({key}) matches no artifact of {run_name} "
                             f"(known: {_known(artifacts)}); --force adds it as unmatched")
        return {**row, "match": "unmatched"}
    allowed = TOOL_TARGETS[row["source"]]
    found, how = None, None
    model_path = hints.get("model_path")
    if model_path:
        p = (PureWindowsPath if "\\" in model_path else PurePosixPath)(model_path)
        m = _FOLDER.fullmatch(p.parent.name)
        if m and SUFFIX_TARGET.get(p.suffix.lower()) == m.group(1):
            found, how = (m.group(1), m.group(2)), "path"
    if found is None:
        t = target or (allowed[0] if len(allowed) == 1 else None)
        if t is None and model_path:
            t = SUFFIX_TARGET.get(PurePosixPath(model_path.replace("\\", "/")).suffix.lower())
        if not (t and precision):
            where = f"its model path {model_path!r} is not in a <target>-<precision> export folder" if model_path \
                else f"a {row['source']} result names no model path"
            raise _err(path, f"cannot tell which artifact it measured: {where}; give --target and --precision")
        found, how = (t, precision), "options"
    if found[0] not in allowed:
        raise _err(path, f"{row['source']} measures {' or '.join(allowed)} artifacts, not {found[0]}")
    key = f"{found[0]}-{found[1]}"
    row = {**row, "target": found[0], "precision": found[1]}
    if key in artifacts:
        return {**row, "match": how}
    if not force:
        raise _err(path, f"{key} (from {'its model path' if how == 'path' else '--target/--precision'}) is no "
                         f"artifact of {run_name} (known: {_known(artifacts)}); --force adds it as unmatched")
    return {**row, "match": "unmatched"}


# ----------------------------------------------------------------------- storage


def devices_dir(run) -> Path:
    return Path(run.root) / "devices"


def row_filename(row: dict) -> str:
    """``<label>-<target>-<precision>-<source>.json``, each part made file-name safe."""
    parts = [re.sub(r"[^A-Za-z0-9._+-]+", "_", str(row[k])).strip("._-") or "unknown"
             for k in ("label", "target", "precision", "source")]
    return "-".join(parts) + ".json"


def add_device_results(run, files: list[str | Path], *, label: str | None = None, target: str | None = None,
                       precision: str | None = None, force: bool = False) -> list[dict]:
    """Read, match and store every file; all or nothing: every file is read and matched
    before the first row is written. Returns the stored rows (with ``path``)."""
    if target is not None and target not in TARGETS:
        raise DeviceResultError(f"unknown --target {target!r}; valid: {', '.join(TARGETS)}")
    if precision is not None and precision not in PRECISIONS:
        raise DeviceResultError(f"unknown --precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    artifacts = run_artifacts(run)
    rows = []
    for f in files:
        row, hints = read_device_file(f)
        if label:
            row["label"] = label
        rows.append(match_row(row, hints, artifacts, target=target, precision=precision, force=force,
                              run_name=str(run.root)))
    for row in rows:
        row["path"] = str(write_json(devices_dir(run) / row_filename(row), _ordered(row)))
    return rows


_ORDER = ("kind", "source", "label", "target", "precision", "task", "artifact_sha256", "match", "latency",
          "load_ms", "first_inference_ms", "peak_rss_mb")


def _ordered(row: dict) -> dict:
    """The row with its identifying fields first and ``file`` last, as stored."""
    head = {k: row[k] for k in _ORDER if k in row}
    rest = {k: v for k, v in row.items() if k not in head and k not in ("file", "path")}
    return {**head, **rest, "file": row["file"]}


def load_device_rows(run) -> list[dict]:
    """The stored device rows of a run, by file name; unreadable files are skipped with a line."""
    rows = []
    for p in sorted(devices_dir(run).glob("*.json")):
        try:
            row = read_json(p)
        except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, CorruptFileError
            from hrnet_edge.console import say

            say(f"[report] skipped {p}: not JSON ({exc})")
            continue
        if isinstance(row, dict) and row.get("kind") == "device":
            rows.append({**row, "path": str(p)})
    return rows


def pair_with_checks(device_rows: list[dict], check_rows: list[dict], metric: str) -> list[dict]:
    """Each device row with ``host_check``: the run's own check of the same artifact
    (status, p50, metric); only p50 and metric are left out when the check measured
    another file (re-exported since: the sha256 differs)."""
    checks = {(r.get("target"), r.get("precision")): r for r in check_rows}
    out = []
    for d in device_rows:
        c = checks.get((d.get("target"), d.get("precision")))
        if d.get("match") == "unmatched" or c is None:
            out.append(d)
            continue
        same = not (d.get("artifact_sha256") and c.get("artifact_sha256")) or \
            d["artifact_sha256"] == c["artifact_sha256"] or c["artifact_sha256"].startswith(d["artifact_sha256"])
        host = {"status": c.get("status"), "same_artifact": same}
        if same:
            host["p50_ms"] = (c.get("latency") or {}).get("p50_ms")
            host[metric] = (c.get("metric") or {}).get(metric)
        out.append({**d, "host_check": _clean(host)})
    return out


def device_latency(row: dict) -> tuple[float, str] | None:
    """The latency a device row is plotted at: p50, else the trimmed mean, else the mean."""
    lat = row.get("latency") or {}
    for key, name in (("p50_ms", "p50"), ("trimmed_mean_ms", "trimmed mean"), ("mean_ms", "mean")):
        if lat.get(key) is not None:
            return float(lat[key]), name
    return None
