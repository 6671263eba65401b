"""The precision a graph computes in, and a float32 copy of a float16 graph for torch.

optimize_dl_model_for_inference writes float16 graphs (onnxruntime's float16 conversion,
float32 inputs and outputs kept) and QDQ int8 graphs (static quantisation). onnxruntime runs
both as they are. The torch side differentiates float16 graphs in float32: the weights keep
their float16-rounded values, every tensor is float32, so gradients do not lose float16's
range and precision on the way back (spec/decisions.md, "Converted models").
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from dlheatmap.graph.analysis import GraphInfo

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def graph_precision(info: GraphInfo) -> str:
    """'int8' for a graph with QuantizeLinear / DequantizeLinear nodes, 'float16' for one
    with float16 weights, else the image input's element type ('float32' without one)."""
    graph = info.model.graph
    if any(node.op_type in QDQ_OPS for node in graph.node):
        return "int8"
    if has_float16(info.model):
        return "float16"
    return info.image_input.dtype.name if info.image_input else "float32"


def has_float16(model: onnx.ModelProto) -> bool:
    """Whether any initializer of ``model`` is float16."""
    return any(init.data_type == TensorProto.FLOAT16 for init in model.graph.initializer)


def float32_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every float16 initializer, Cast target and declared tensor made float32.

    The values are the float16 ones, widened exactly; the graph then computes in float32.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    for index, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT16:
            wide = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32),
                                           init.name)
            graph.initializer[index].CopyFrom(wide)
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
                attr.i = TensorProto.FLOAT
            elif attr.type == onnx.AttributeProto.TENSOR and \
                    attr.t.data_type == TensorProto.FLOAT16:
                attr.t.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name))
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    return copy





def fold_constant_dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every DequantizeLinear of initializers (static quantisation's int8
    weights) replaced by the float32 initializer it computes, ``(q - zero_point) * scale``.

    The value is exactly onnxruntime's; converters that need a weight as an initializer
    (onnx2torch's Conv) then find one, and nothing differentiates a weight anyway.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    values = {init.name: init for init in graph.initializer}
    kept = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type != "DequantizeLinear" or not all(name in values for name in inputs):
            kept.append(node)
            continue
        axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 1)
        weight = _dequantized(*(numpy_helper.to_array(values[name]) for name in inputs),
                              axis=axis)
        graph.initializer.append(numpy_helper.from_array(weight, node.output[0]))
    del graph.node[:]
    graph.node.extend(kept)
    return copy


def _dequantized(quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None,
                 axis: int = 1) -> np.ndarray:
    """DequantizeLinear's formula, per tensor or along ``axis``."""
    shape = [1] * quantized.ndim
    if scale.size > 1:
        shape[axis % quantized.ndim] = -1
    zero = 0 if zero_point is None else zero_point.astype(np.float32).reshape(shape)
    return ((quantized.astype(np.float32) - zero) * scale.astype(np.float32).reshape(shape)
            ).astype(np.float32)
