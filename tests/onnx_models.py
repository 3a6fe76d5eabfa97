"""Tiny ONNX classifiers built in code, so every output is known exactly.

``pooled_linear`` averages each colour channel over the image (the "embedding"), then
applies a 3x2 linear layer: logits = pooled @ W + b. With a uniform input image the
expected logits follow by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

W = np.array([[1.0, -1.0], [0.5, 0.25], [-2.0, 3.0]], dtype=np.float32)
B = np.array([0.1, -0.2], dtype=np.float32)


def pooled_linear(
    path: Path,
    *,
    layout: str = "NCHW",
    size: int = 8,
    batch: bool = True,
    input_name: str = "pixels",
    fail: bool = False,
    nan: bool = False,
) -> Path:
    """Write the model to ``path``; ``fail`` builds one whose output shape is wrong at
    run time (a Reshape to an impossible size), to exercise failed batches; ``nan`` one
    whose logits are all NaN (fp16 overflow, a broken export)."""
    n = "N" if batch else 1
    shape = [n, 3, size, size] if layout == "NCHW" else [n, size, size, 3]
    axes = [2, 3] if layout == "NCHW" else [1, 2]
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, 2])
    nodes = [
        helper.make_node("ReduceMean", [input_name, "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["logits_raw"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes"),
        numpy_helper.from_array(W, "W"),
        numpy_helper.from_array(B, "B"),
    ]
    if fail:
        nodes.append(helper.make_node("Reshape", ["logits_raw", "bad_shape"], ["logits"]))
        inits.append(numpy_helper.from_array(np.array([7, 5], dtype=np.int64), "bad_shape"))
    elif nan:
        nodes.append(helper.make_node("Mul", ["logits_raw", "nan"], ["logits"]))
        inits.append(numpy_helper.from_array(np.array([np.nan], dtype=np.float32), "nan"))
    else:
        nodes.append(helper.make_node("Identity", ["logits_raw"], ["logits"]))
    graph = helper.make_graph(nodes, "pooled_linear", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def expected_logits(rgb: tuple[float, float, float]) -> np.ndarray:
    """Logits for a uniform image whose preprocessed channel values are ``rgb``."""
    return np.asarray(rgb, dtype=np.float32) @ W + B
