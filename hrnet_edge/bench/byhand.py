"""What a user gets by hand: each tool's documented default calls on the same model.

These are the benchmark's baselines. Each function exports the float model (and its
INT8 version, calibrated on the same images as the project's) with the calls the
tool's own documentation shows, loads it with the runtime's defaults (threads set to
the benchmark's count, as every row) and returns a callable that takes the NCHW float
batch the project's runners take. ``HOW`` says, per row, exactly which calls were used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

Fn = Callable[[np.ndarray], Any]

HOW = {
    ("onnx", "fp32"): "torch.onnx.export(model, (x,), f, dynamo=False, input_names=['input']) [the dynamo default needs "
                      "onnxscript; onnx2tf's calibration cannot name the default input 'onnx::Sub_0']; "
                      "onnxruntime.InferenceSession(f)",
    ("onnx", "int8"): "onnxruntime.quantization.quantize_static(f, q, reader) with its defaults "
                      "(QDQ, int8 per-tensor, MinMax) on the same ONNX",
    ("openvino", "default"): "openvino.convert_model(model, example_input=x); core.compile_model(m, 'CPU') "
                             "(the CPU plugin's default precision)",
    ("openvino", "int8"): "nncf.quantize(convert_model(...), nncf.Dataset(images)) with its defaults; "
                          "compile_model(q, 'CPU')",
    ("tflite", "fp32"): "onnx2tf.convert on the by-hand ONNX; LiteRT Interpreter (XNNPACK default)",
    ("tflite", "int8"): "onnx2tf.convert(output_integer_quantized_tflite=True, calibration = the same images); "
                        "the float-I/O integer model",
    ("executorch", "fp32"): "torch.export.export; to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])",
    ("executorch", "int8"): "XNNPACKQuantizer().set_global(get_symmetric_quantization_config()); "
                            "prepare_pt2e / calibrate / convert_pt2e; then as fp32",
}


def onnx_fp32(model, example, work: Path, threads: int) -> tuple[Fn, dict]:
    import onnxruntime as ort
    import torch

    path = work / "byhand.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"])
    return _ort(path, threads), {}


def onnx_int8(model, example, work: Path, threads: int, calibration: np.ndarray) -> tuple[Fn, dict]:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    src = work / "byhand.onnx"
    if not src.is_file():
        onnx_fp32(model, example, work, threads)
    import onnx

    name = onnx.load(str(src), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    dst = work / "byhand-int8.onnx"
    quantize_static(str(src), str(dst), Reader())
    return _ort(dst, threads), {}


def _ort(path: Path, threads: int) -> Fn:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _ov_compile(ov_model, threads: int) -> tuple[Fn, dict]:
    import openvino as ov

    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return (lambda x: request.infer([x])[0]), {"ran": ran}


def openvino_default(model, example, work: Path, threads: int) -> tuple[Fn, dict]:
    import openvino as ov

    return _ov_compile(ov.convert_model(model, example_input=example), threads)


def openvino_int8(model, example, work: Path, threads: int, calibration: np.ndarray) -> tuple[Fn, dict]:
    import nncf
    import openvino as ov

    ov_model = ov.convert_model(model, example_input=example)
    q = nncf.quantize(ov_model, nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))]))
    return _ov_compile(q, threads)


def tflite(model, example, work: Path, threads: int, calibration: np.ndarray | None) -> tuple[Fn, dict]:
    import contextlib
    import os

    src = work / "byhand.onnx"
    if not src.is_file():
        onnx_fp32(model, example, work, threads)
    import onnx
    import onnx2tf

    name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    out = work / ("tflite-int8" if calibration is not None else "tflite-fp32")
    nhwc = np.ascontiguousarray((calibration if calibration is not None else example.numpy()).transpose(0, 2, 3, 1))
    np.save(work / "calibration_nhwc.npy", nhwc)
    kwargs: dict[str, Any] = {}
    if calibration is not None:
        kwargs = dict(output_integer_quantized_tflite=True,
                      custom_input_op_name_np_data_path=[[name, str(work / "calibration_nhwc.npy"),
                                                          np.zeros((1, 1, 1, 3), np.float32),
                                                          np.ones((1, 1, 1, 3), np.float32)]])
    cwd = os.getcwd()
    # onnx2tf's output check loads a sample file from the working directory (or downloads
    # one): give it ours, so nothing reaches the network.
    np.save(work / "calibration_image_sample_data_20x128x128x3_float32.npy", nhwc[:20])
    try:
        os.chdir(work)
        with contextlib.suppress(SystemExit):
            onnx2tf.convert(input_onnx_file_path=str(src), output_folder_path=str(out), non_verbose=True, **kwargs)
    finally:
        os.chdir(cwd)
    suffix = "integer_quant" if calibration is not None else "float32"
    path = out / f"byhand_{suffix}.tflite"
    if not path.is_file():
        raise RuntimeError(f"onnx2tf wrote no {path.name}: {sorted(p.name for p in out.glob('*.tflite'))}")
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    inp, outp = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

    def run(x: np.ndarray):
        it.set_tensor(inp, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        it.invoke()
        return it.get_tensor(outp)

    return run, {}


def executorch(model, example, work: Path, threads: int, calibration: np.ndarray | None) -> tuple[Fn, dict]:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad():
        if calibration is None:
            ep = torch.export.export(model, (example,))
        else:
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer, get_symmetric_quantization_config,
            )
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
            prepared = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
            for i in range(len(calibration)):
                prepared(torch.from_numpy(calibration[i:i + 1]))
            ep = torch.export.export(convert_pt2e(prepared), (example,))
        program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    path = work / ("byhand-int8.pte" if calibration is not None else "byhand.pte")
    path.write_bytes(program.buffer)
    from converters.executorch import ExecuTorchRunner

    runner = ExecuTorchRunner(path, threads)  # the runtime's Python API; nothing of ours in the graph
    method = runner.method
    return (lambda x: method.execute([torch.from_numpy(x)])[0]), {}
