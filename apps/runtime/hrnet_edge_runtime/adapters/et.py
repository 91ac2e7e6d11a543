"""ExecuTorch: ``model.pte`` through ``executorch.runtime`` (XNNPACK delegate, portable
kernels for what XNNPACK does not take).

The one exception to this package's torch-free rule: the Python bindings of
ExecuTorch's runtime (``executorch.runtime``) import torch and take torch tensors, so
this adapter imports executorch and torch lazily, when an artifact is opened, and
says so in ``info()["imports_torch"]``. A device without torch runs the ``.pte`` from
C++ (``executor_runner``) or the ExecuTorch Android/iOS runtime instead.

Per-op times come from ExecuTorch's ETDump event tracer (``enable_etdump=True``), read
back with ``executorch.devtools.Inspector`` (which needs pandas, as the executorch wheel
ships it).
"""
from __future__ import annotations

import shutil
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hrnet_edge_runtime.adapters.base import Adapter, OpTimes
from hrnet_edge_runtime.errors import ArtifactError, RuntimeUnavailable, require

# ExecuTorch ScalarType codes of the input tensor meta
_SCALAR_TYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
                 7: "float64", 11: "bool", 15: "bfloat16"}
# ETDump events that wrap other events: counting them would count time twice
_WRAPPERS = {"Method::execute", "DELEGATE_CALL", "OPERATOR_CALL"}


class ExecuTorchAdapter(Adapter):
    """The ``forward`` method of a ``.pte``; ``threads`` resizes ExecuTorch's
    process-wide thread pool (an experimental binding; None leaves it as it is)."""

    runtime = "executorch"
    distribution = "executorch"
    extra = "executorch"
    modules = ("torch", "executorch.runtime")

    def _open(self) -> None:
        self.device = self.device or "CPU"
        if self.device.upper() != "CPU":
            raise RuntimeUnavailable(f"the ExecuTorch Python runtime runs the XNNPACK (CPU) program here, "
                                     f"not {self.device!r}; it lists: CPU")
        runtime_mod = require("executorch.runtime", self.extra)
        self._torch = require("torch", self.extra)
        self.threads_applied = self._set_threads()
        self._rt = runtime_mod.Runtime.get()
        try:
            self.program = self._rt.load_program(str(self.artifact.model_path), enable_etdump=self.profiling)
            self.method = self.program.load_method("forward")
        except Exception as exc:  # the bindings raise RuntimeError for a bad program
            raise ArtifactError(f"{self.artifact.model_path}: ExecuTorch cannot load it ({exc})") from exc
        got = _SCALAR_TYPES.get(int(self.method.metadata.input_tensor_meta(0).dtype()), "?")
        if got != self.input_spec.dtype:
            raise ArtifactError(f"{self.artifact.model_path}: the program's input is {got}, "
                                f"metadata.json says {self.input_spec.dtype}")

    def _set_threads(self) -> bool:
        if not self.threads:
            return False
        try:
            from executorch.extension.pybindings import portable_lib
        except ImportError:  # pragma: no cover - a runtime without the pybindings
            return False
        reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
        if reset is None:
            return False
        reset(int(self.threads))
        return True

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.method.execute([self._torch.from_numpy(x)])[0]
        # the runtime may reuse its output buffer on the next call: copy it out
        return out.detach().numpy().astype(np.float32, copy=True)

    def _info(self) -> dict[str, Any]:
        try:
            backends = list(self._rt.backend_registry.registered_backend_names)
        except Exception:  # noqa: BLE001 - older runtimes have no registry
            backends = None
        return {"imports_torch": True, "torch_version": getattr(self._torch, "__version__", None),
                "registered_backends": backends, "method": "forward",
                "threads_applied": self.threads_applied,
                "threads_note": None if self.threads_applied else "ExecuTorch's default thread pool",
                "delegation": self.artifact.meta.get("delegation")}

    def _profile(self, x: np.ndarray, iterations: int) -> dict[str, Any]:
        for _ in range(iterations + 1):  # one warm-up run, dropped below
            self._run(x)
        tmp = Path(tempfile.mkdtemp(prefix="hrnet-edge-etdump-"))
        try:
            self.program.write_etdump_result_to_file(str(tmp / "run.etdp"), str(tmp / "debug.bin"))
            try:
                from executorch.devtools import Inspector
            except ImportError as exc:
                return {"available": False, "reason": f"executorch.devtools.Inspector is not importable ({exc})"}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Output Buffer not found": no tensor debug data asked for
                inspector = Inspector(etdump_path=str(tmp / "run.etdp"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        times, seen = OpTimes(), Counter()
        for block in inspector.event_blocks:
            if block.name != "Execute":
                continue
            for ev in block.events:
                if ev.name in _WRAPPERS or ev.perf_data is None:
                    continue
                # XNNPACK numbers its operators per delegate partition: names repeat across them
                seen[ev.name] += 1
                key = ev.name if seen[ev.name] == 1 else f"{ev.name} (partition op {seen[ev.name]})"
                kind = f"{ev.delegate_backend_name or 'XNNPACK'} delegate" if ev.is_delegated_op else "portable kernel"
                for ms in list(ev.perf_data.raw)[-iterations:]:
                    times.add(key, ev.name.split(" #")[0], float(ms), kind)
        return times.summary(self.runtime, "ExecuTorch ETDump (enable_etdump=True) via executorch.devtools.Inspector",
                             iterations, note="XNNPACK operator names inside the delegate; "
                                              "portable kernels as native_call_<op>")

    def close(self) -> None:
        self.method = None
        self.program = None
