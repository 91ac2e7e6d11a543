"""A check process that runs an ONNX, OpenVINO, TFLite or Core ML artifact imports no
torch: importing it costs ~1.5 s of a ~4 s check (6.5-7.0 s with it, Intel Xeon), and
the check stage starts one such process per artifact."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from hrnet_edge.runconfig import load_run_config
from hrnet_edge.runs import init_run

# What hrnet_edge.pipeline.checking imports before it runs an artifact: the run and its
# configuration, the check helpers, the references module, the task, the target.
PROBE = textwrap.dedent("""
    import sys
    from hrnet_edge.pipeline import checking, references
    from hrnet_edge.runs import open_run
    from converters.check import artifact_files, inspection, measure_latency
    from converters.registry import get_target
    run, cfg = open_run(sys.argv[1])
    task = cfg.task
    for name in sys.argv[2:]:
        get_target(name).runnable()
    print("torch" in sys.modules)
""")


@pytest.mark.parametrize("model", ["hrnet_w8_det", "hrnet_w8_seg", None])
def test_a_check_of_a_non_pytorch_artifact_imports_no_torch(tmp_path, model):
    run = init_run(tmp_path / "r", load_run_config(None, model=model))
    out = subprocess.run([sys.executable, "-c", PROBE, str(run.root), "onnx", "openvino", "tflite", "coreml"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False", "a check process imported torch"


def test_the_probe_sees_torch_when_it_is_imported(tmp_path):
    """The probe can fail: the same run, and a target whose runtime needs torch."""
    run = init_run(tmp_path / "r", load_run_config(None))
    out = subprocess.run([sys.executable, "-c", PROBE, str(run.root), "onnx", "executorch"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"
