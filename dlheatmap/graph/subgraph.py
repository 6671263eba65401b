"""Cutting a graph at a tensor: the part between a target layer and the class score.

Grad-CAM needs gradients only from the class score back to the target layer. The nodes that
matter are those on a path from the target tensor to the score; every other tensor they read
(a skip connection from before the target, say) is an input fed from the forward pass that
onnxruntime has already done.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx
from onnx import helper

from dlheatmap.graph.analysis import GraphInfo, LayerInfo


def tail_nodes(info: GraphInfo, start: str, end: str) -> tuple[list[LayerInfo], list[str]]:
    """Nodes on a path from tensor ``start`` to tensor ``end``, and their outside inputs.

    Nodes that compute a constant (a ``Cast`` of an initializer feeding a ``Concat`` that
    builds a ``Reshape`` target, as paddle2onnx writes) are included when the path needs them,
    so that a graph cut at the model input has no outside inputs at all.

    Returns
    -------
    nodes : list of LayerInfo
        In graph (topological) order.
    side_inputs : list of str
        Tensors that the nodes read which are neither ``start``, produced by the nodes, nor
        initializers, in order of first use.
    """
    downstream = _reachable_forward(info, start) | _constant_nodes(info)
    upstream = _reachable_backward(info, end)
    nodes = [layer for layer in info.layers if layer.index in downstream & upstream]
    produced = {out for layer in nodes for out in layer.outputs}
    side_inputs: list[str] = []
    for layer in nodes:
        for name in layer.inputs:
            if (
                name
                and name != start
                and name not in produced
                and name not in info.initializer_names
                and name not in side_inputs
            ):
                side_inputs.append(name)
    return nodes, side_inputs


def _reachable_forward(info: GraphInfo, tensor: str) -> set[int]:
    seen: set[int] = set()
    frontier = [tensor]
    while frontier:
        for layer in info.consumers.get(frontier.pop(), []):
            if layer.index not in seen:
                seen.add(layer.index)
                frontier.extend(layer.outputs)
    return seen


def _constant_nodes(info: GraphInfo) -> set[int]:
    """Nodes whose inputs are all initializers or outputs of other constant nodes."""
    constant_tensors = set(info.initializer_names) | {""}  # "" marks an omitted optional input
    constant: set[int] = set()
    for layer in info.layers:  # graph order is topological
        if all(name in constant_tensors for name in layer.inputs):
            constant.add(layer.index)
            constant_tensors.update(layer.outputs)
    return constant


def _reachable_backward(info: GraphInfo, tensor: str) -> set[int]:
    seen: set[int] = set()
    frontier = [tensor]
    while frontier:
        layer = info.producer.get(frontier.pop())
        if layer is not None and layer.index not in seen:
            seen.add(layer.index)
            frontier.extend(name for name in layer.inputs if name)
    return seen


def extract_subgraph(
    info: GraphInfo,
    nodes: Iterable[LayerInfo],
    inputs: dict[str, tuple[int, onnx.TensorProto.DataType]],
    outputs: list[str],
    name: str = "dlheatmap_subgraph",
) -> onnx.ModelProto:
    """A standalone model made of ``nodes`` with the given graph inputs and outputs.

    Parameters
    ----------
    inputs
        Tensor name -> (rank, ONNX element type). Where the source graph fixes a dimension
        other than the batch dimension (a channel count, say), the input keeps it, and the
        element type is the inferred one; every other dimension is symbolic.
    outputs
        Names of the tensors to return, in order.
    """
    source = info.model.graph
    node_protos = [source.node[layer.index] for layer in nodes]
    used = {name for node in node_protos for name in node.input}
    initializers = [init for init in source.initializer if init.name in used]
    input_infos = [
        _input_info(info, tensor, rank, elem_type) for tensor, (rank, elem_type) in inputs.items()
    ]
    output_infos = [helper.make_empty_tensor_value_info(tensor) for tensor in outputs]
    graph = helper.make_graph(node_protos, name, input_infos, output_infos, initializers)
    model = helper.make_model(graph, opset_imports=list(info.model.opset_import))
    model.ir_version = info.model.ir_version
    return model


def _input_info(
    info: GraphInfo, tensor: str, rank: int, elem_type: int
) -> onnx.ValueInfoProto:
    dims: list[int | str] = [f"{tensor}_d{i}" for i in range(rank)]
    dims[0] = "batch"
    known = info.value_types.get(tensor)
    if known is not None and len(known.tensor_type.shape.dim) == rank:
        for i, dim in enumerate(known.tensor_type.shape.dim[1:], start=1):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims[i] = dim.dim_value
        elem_type = known.tensor_type.elem_type or elem_type
    return helper.make_tensor_value_info(tensor, elem_type, dims)


def with_extra_outputs(model: onnx.ModelProto, tensors: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns ``tensors`` (for onnxruntime)."""
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    present = {out.name for out in extended.graph.output}
    for tensor in tensors:
        if tensor not in present:
            extended.graph.output.append(helper.make_empty_tensor_value_info(tensor))
            present.add(tensor)
    return extended
