"""Facts about the machine a result was measured on: CPU, cores, OS, Python, libc and
the versions of the runtimes installed (read from package metadata, nothing imported).

No host name or other identifier is recorded here; a result's ``label`` is the user's
``--label`` (the host name when none is given).
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

# distributions whose versions a result records (those installed)
RUNTIME_DISTRIBUTIONS = ("hrnet-edge-runtime", "numpy", "pillow", "onnxruntime", "onnxruntime-gpu",
                         "openvino", "ai-edge-litert", "executorch", "torch", "coremltools")
# CPU features that change numerics or speed of the runtimes (x86 flags, Arm features)
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
                "amx_int8", "avx_vnni", "asimd", "asimddp", "asimdhp", "sve", "sve2", "i8mm", "bf16")


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    facts: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key not in facts:
            facts[key] = value.strip()
    return facts


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def cpu_model() -> str:
    """The CPU's marketing name where the OS says it, else ``platform.processor()``."""
    info = _cpuinfo()
    for key in ("model name", "hardware", "cpu model", "processor"):
        value = info.get(key)
        if value and not value.isdigit():
            return value
    if sys.platform == "darwin":
        brand = _sysctl("machdep.cpu.brand_string")
        if brand:
            return brand
    if "cpu implementer" in info:  # Arm Linux without a model name
        return f"Arm implementer {info['cpu implementer']} part {info.get('cpu part', '?')}"
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    """The features of :data:`CPU_FEATURES` this CPU lists (Linux ``flags``/``Features``)."""
    info = _cpuinfo()
    have = set((info.get("flags") or info.get("features") or "").split())
    return [f for f in CPU_FEATURES if f in have]


def memory_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    if sys.platform == "darwin":
        size = _sysctl("hw.memsize")
        return int(size) / 2**20 if size and size.isdigit() else None
    return None


def runtime_versions() -> dict[str, str]:
    """{distribution: version} of :data:`RUNTIME_DISTRIBUTIONS` that are installed."""
    from hrnet_edge_runtime.adapters.base import dist_version

    return {dist: v for dist in RUNTIME_DISTRIBUTIONS if (v := dist_version(dist)) is not None}


def host_facts() -> dict[str, Any]:
    """The host record of a device result (JSON types only)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    libc_name, libc_version = platform.libc_ver()
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cpu_features": cpu_features(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_total_mb": memory_total_mb(),
        "os": platform.system(),
        "os_release": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "libc": f"{libc_name} {libc_version}".strip() or None,
        "runtime_versions": runtime_versions(),
    }
