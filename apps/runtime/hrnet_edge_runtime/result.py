"""The device result: one JSON document per ``hrnet-edge-run``, versioned.

Its field names are those of the project's host check rows
(``runs/<run>/checks/<target>-<precision>.json``: ``artifact_sha256``, ``size_bytes``,
``latency.p50_ms``, ``rss_before_load_mb``, ``peak_rss_mb``), so device rows and host
rows can be put side by side. ``artifact_sha256`` is written as the host rows write it:
the model file's sha256 followed by its companions' (OpenVINO: .xml then .bin).

Schema ``hrnet-edge-device-result``, version 1::

    schema, schema_version, source ("hrnet-edge-run"), label, target, precision, task,
    artifact ("<target>-<precision>/<model file>"), artifact_sha256, sha256_verified, size_bytes,
    load_ms, first_inference_ms,
    latency {p50_ms, p90_ms, p95_ms, p99_ms, mean_ms, trimmed_mean_ms, min_ms, max_ms,
             std_ms, iterations, warmup, threads},
    rss_before_load_mb, peak_rss_mb, runtime {name, version, device, ...},
    host {cpu, arch, ...}, profile {available, ...}, inputs ("random" | "images:<n>"),
    created (ISO 8601 with time zone)

Further fields may appear and readers must ignore those they do not know;
``hrnet-edge-run`` adds ``variant`` and ``runtime_import_ms`` (importing the runtime's
Python modules, which ``load_ms`` leaves out), ``samples`` (``--samples``) and, with
``--labels``, the task metric on the labelled pictures::

    metric_name ("AP" | "mIoU" | "top1": the primary metric, as the host rows name it),
    metric {the host check rows' keys: pose AP, AP50, AP75, APm, APl, AR, AR50, AR75,
            ARm, ARl, PCK@0.05, PCK@0.1, num_instances; det AP, AP50, AP75, APs, APm,
            APl, AR1, AR10, AR100, no_results; seg mIoU, pixel_acc, mean_acc,
            per_class_IoU, absent_classes, num_pixels, num_images; cls top1, top5,
            num_images; a metric without a value (no labelled pixel) is null},
    evaluation {labels, format, images, annotations, ... how the inputs were made}

These three come together or not at all.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from hrnet_edge_runtime.errors import ArtifactError, UsageError

SCHEMA = "hrnet-edge-device-result"
SCHEMA_VERSION = 1
SOURCE = "hrnet-edge-run"

_NUM, _OPT_NUM, _INT, _OPT_INT = "number", "number or null", "integer", "integer or null"
FIELDS: dict[str, Any] = {
    "schema": str, "schema_version": _INT, "source": str, "label": str,
    "target": str, "precision": str, "task": str, "artifact": str, "artifact_sha256": str,
    "sha256_verified": bool, "size_bytes": _INT, "load_ms": _NUM, "first_inference_ms": _NUM,
    "latency": dict, "rss_before_load_mb": _OPT_NUM, "peak_rss_mb": _OPT_NUM,
    "runtime": dict, "host": dict, "profile": dict, "inputs": str, "created": str,
}
LATENCY_FIELDS: dict[str, Any] = {
    "p50_ms": _NUM, "p90_ms": _NUM, "p95_ms": _NUM, "p99_ms": _NUM, "mean_ms": _NUM,
    "trimmed_mean_ms": _NUM, "min_ms": _NUM, "max_ms": _NUM, "std_ms": _NUM,
    "iterations": _INT, "warmup": _INT, "threads": _OPT_INT,
}
METRIC_FIELDS = ("metric_name", "metric", "evaluation")
_INPUTS = re.compile(r"^(random|images:[1-9][0-9]*)$")
_SHA = re.compile(r"^([0-9a-f]{64})+$")


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _ok(value: Any, kind: Any) -> bool:
    if kind in (_NUM, _OPT_NUM):
        if value is None:
            return kind == _OPT_NUM
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if kind in (_INT, _OPT_INT):
        if value is None:
            return kind == _OPT_INT
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return isinstance(value, kind)


def _check_fields(d: dict, spec: dict[str, Any], prefix: str = "") -> None:
    for key, kind in spec.items():
        name = prefix + key
        if key not in d:
            raise ArtifactError(f"device result: missing field {name!r}")
        if not _ok(d[key], kind):
            want = kind if isinstance(kind, str) else {str: "string", bool: "boolean", dict: "object"}[kind]
            raise ArtifactError(f"device result: field {name!r} must be a {want}"
                                f"{'' if 'number' not in str(kind) else ' >= 0'}, got {d[key]!r}")


def validate_result(d: Any) -> dict[str, Any]:
    """Check a device result; returns it unchanged.

    Raises:
        UsageError: ``d`` is not a dict.
        ArtifactError: another schema or version, a missing field or one of the wrong
            type (named), latency percentiles out of order, a malformed hash, inputs or
            creation time.
    """
    if not isinstance(d, dict):
        raise UsageError(f"a device result is a JSON object, got {type(d).__name__}")
    if d.get("schema") != SCHEMA:
        raise ArtifactError(f"not a device result: field 'schema' is {d.get('schema')!r}, expected {SCHEMA!r}")
    if d.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"device result: unknown schema_version {d.get('schema_version')!r}; "
                            f"this version reads {SCHEMA_VERSION}")
    _check_fields(d, FIELDS)
    lat = d["latency"]
    _check_fields(lat, LATENCY_FIELDS, "latency.")
    order = ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
    for lo, hi in zip(order, order[1:]):
        if lat[lo] > lat[hi] * (1 + 1e-9):
            raise ArtifactError(f"device result: latency.{lo} ({lat[lo]}) exceeds latency.{hi} ({lat[hi]})")
    if lat["iterations"] < 1:
        raise ArtifactError("device result: field 'latency.iterations' must be at least 1")
    if not _SHA.match(d["artifact_sha256"]):
        raise ArtifactError("device result: field 'artifact_sha256' must be one or more 64-hex-digit hashes, "
                            f"got {d['artifact_sha256']!r}")
    if not _INPUTS.match(d["inputs"]):
        raise ArtifactError(f"device result: field 'inputs' must be 'random' or 'images:<n>', got {d['inputs']!r}")
    try:
        created = _dt.datetime.fromisoformat(d["created"])
    except ValueError as exc:
        raise ArtifactError(f"device result: field 'created' is not an ISO 8601 time: {d['created']!r}") from exc
    if created.tzinfo is None:
        raise ArtifactError(f"device result: field 'created' needs a time zone, got {d['created']!r}")
    for key, inner in (("runtime", "name"), ("host", "arch")):
        if not isinstance(d[key].get(inner), str):
            raise ArtifactError(f"device result: field '{key}.{inner}' must be a string")
    if not isinstance(d["profile"].get("available"), bool):
        raise ArtifactError("device result: field 'profile.available' must be a boolean")
    _check_metric(d)
    return d


def _check_metric(d: dict) -> None:
    """The optional ``metric``, ``metric_name`` and ``evaluation`` of ``--labels``."""
    present = [k for k in METRIC_FIELDS if k in d]
    if not present:
        return
    if len(present) != len(METRIC_FIELDS):
        missing = [k for k in METRIC_FIELDS if k not in d]
        raise ArtifactError(f"device result: field(s) {missing} missing beside {present} (they come together)")
    name, metric, ev = d["metric_name"], d["metric"], d["evaluation"]
    if not isinstance(metric, dict) or not isinstance(name, str) or name not in metric:
        raise ArtifactError(f"device result: field 'metric' must be an object holding 'metric_name' ({name!r})")
    value = metric[name]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value)):
        raise ArtifactError(f"device result: field 'metric.{name}' must be a number or null, got {value!r}")
    if not isinstance(ev, dict) or not _ok(ev.get("images"), _INT) or ev["images"] < 1:
        raise ArtifactError("device result: field 'evaluation.images' must be a positive integer")


def jsonable(obj: Any) -> Any:
    """``obj`` made of JSON types (numpy scalars and arrays to numbers and lists,
    anything else unknown to its string), so a runtime's odd value cannot break a write."""
    def default(o):
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    return json.loads(json.dumps(obj, default=default, allow_nan=False))


def build_result(*, artifact, measured: dict[str, Any], runtime: dict[str, Any], host: dict[str, Any],
                 profile: dict[str, Any], inputs: str, label: str, threads: int | None,
                 sha256_verified: bool) -> dict[str, Any]:
    """Assemble a result from an :class:`~hrnet_edge_runtime.metadata.Artifact` and
    :func:`hrnet_edge_runtime.stats.measure`'s numbers, then validate it."""
    latency = dict(measured["latency"])
    latency["threads"] = threads
    result = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "source": SOURCE, "label": label,
        "target": artifact.target, "precision": artifact.precision, "task": artifact.task,
        "variant": artifact.variant,
        # as the project's host rows name it (there: under exports/), whatever the folder is called here
        "artifact": f"{artifact.target}-{artifact.precision}/{artifact.files[0].name}",
        "artifact_sha256": artifact.sha256, "sha256_verified": bool(sha256_verified),
        "size_bytes": artifact.size_bytes,
        "load_ms": measured["load_ms"], "first_inference_ms": measured["first_inference_ms"],
        "latency": {k: latency[k] for k in LATENCY_FIELDS},
        "rss_before_load_mb": measured["rss_before_load_mb"], "peak_rss_mb": measured["peak_rss_mb"],
        "runtime": jsonable(runtime), "host": jsonable(host), "profile": jsonable(profile),
        "inputs": inputs, "created": now_iso(),
    }
    return validate_result(result)


def write_result(path: str | Path, result: dict[str, Any]) -> Path:
    """Validate, then write ``result`` as indented JSON atomically (temporary file in the
    same folder, renamed over ``path``); the folder is created if needed."""
    validate_result(result)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2, allow_nan=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_result(path: str | Path) -> dict[str, Any]:
    """Read and validate a device result file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not a readable JSON device result ({exc})") from exc
    return validate_result(data)
