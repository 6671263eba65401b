"""Reading ONNX files and normalising their graphs.

Exporters store weights in several ways that onnx2torch cannot all read: ``torch.onnx.export``
deduplicates shared weights into ``Identity`` nodes over an initializer, paddle2onnx and others
emit ``Constant`` nodes. Normalisation turns all of them into plain initializers, gives every
node a stable unique name and leaves the computation untouched, so that onnxruntime, onnx2torch
and the layer names shown in 'summary' all see the same graph.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter

import onnx
from onnx import helper, numpy_helper

from dlheatmap.errors import ErrorCode, HOperatorError

# Constant attributes other than 'value' (opset 12+), converted to tensors.
_SCALAR_CONSTANT_ATTRS = {
    "value_float": onnx.TensorProto.FLOAT,
    "value_floats": onnx.TensorProto.FLOAT,
    "value_int": onnx.TensorProto.INT64,
    "value_ints": onnx.TensorProto.INT64,
}


def load_model(path: str | os.PathLike, operator: str = "read_dl_model") -> onnx.ModelProto:
    """Read an ONNX file and return its normalised graph.

    Raises
    ------
    HOperatorError
        7801 if the file is missing, a directory, empty, not ONNX, or fails ONNX's checker.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise HOperatorError(ErrorCode.READ_ONNX,
                             f"{path!r} is a directory, not an ONNX file", operator)
    if not os.path.isfile(path):
        raise HOperatorError(ErrorCode.READ_ONNX, f"no such file: {path!r}", operator)
    if os.path.getsize(path) == 0:
        raise HOperatorError(ErrorCode.READ_ONNX, f"file is empty: {path!r}", operator)
    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf raises several unrelated types on garbage input
        raise HOperatorError(ErrorCode.READ_ONNX,
                             f"not an ONNX model: {path!r} ({exc})", operator) from exc
    return load_proto(model, repr(path), operator)


def load_proto(model: onnx.ModelProto, where: str = "the model",
               operator: str = "read_dl_model") -> onnx.ModelProto:
    """Check an ONNX model held in memory and return its normalised graph (a copy).

    Nodes are sorted topologically first: converters that append nodes (onnxruntime's float16
    conversion adds its input Casts at the end) write valid graphs in an order ONNX's checker
    refuses. ``where`` names the model in messages.

    Raises
    ------
    HOperatorError
        7801 if the graph has no nodes or fails ONNX's checker.
    """
    if not model.graph.node:
        raise HOperatorError(ErrorCode.READ_ONNX,
                             f"the ONNX graph in {where} has no nodes", operator)
    model = _copy(model)
    sort_topologically(model.graph)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise HOperatorError(ErrorCode.READ_ONNX,
                             f"invalid ONNX model {where}: {exc}", operator) from exc
    return normalise(model)


def sort_topologically(graph: onnx.GraphProto) -> None:
    """Order ``graph``'s nodes so that each comes after the nodes producing its inputs.

    Stable: a node moves only as far as it must, so an already sorted graph keeps its order
    (and node names generated from it). Names no node produces (graph inputs,
    initializers, outer-scope names of subgraphs) count as available. Nodes that can never
    run (a cycle) keep their relative order at the end, for the checker to name.
    """
    producers = {out: index for index, node in enumerate(graph.node) for out in node.output}
    waiting = [{producers[name] for name in node.input if name in producers} - {index}
               for index, node in enumerate(graph.node)]
    consumers: dict[int, list[int]] = {}
    for index, needs in enumerate(waiting):
        for need in needs:
            consumers.setdefault(need, []).append(index)
    ready = [index for index, needs in enumerate(waiting) if not needs]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for consumer in consumers.get(index, ()):
            waiting[consumer].discard(index)
            if not waiting[consumer]:
                heapq.heappush(ready, consumer)
    placed = set(order)
    order += [index for index in range(len(graph.node)) if index not in placed]
    if order != list(range(len(graph.node))):
        nodes = [graph.node[index] for index in order]
        copies = [onnx.NodeProto() for _ in nodes]
        for copy, node in zip(copies, nodes, strict=True):
            copy.CopyFrom(node)
        del graph.node[:]
        graph.node.extend(copies)


def normalise(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` with stable node names and all weights as initializers."""
    model = _copy(model)
    graph = model.graph
    _name_nodes(graph)
    _fold_constants(graph)
    _drop_initializer_inputs(graph)
    _drop_inert_allowzero(graph)
    _raise_ir_version(model)
    return model


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give unnamed nodes ``<op_type>_<n>`` names and make duplicate names unique.

    Names are generated in graph order from the file as read, so they are the same every time
    the same file is loaded.
    """
    taken = Counter(node.name for node in graph.node if node.name)
    seen: set[str] = set()
    counters: Counter[str] = Counter()
    for node in graph.node:
        name = node.name
        if not name or (taken[name] > 1 and name in seen):
            stem = node.name or node.op_type.lower()
            while True:
                counters[stem] += 1
                name = f"{stem}_{counters[stem]}"
                if name not in taken and name not in seen:
                    break
            node.name = name
        seen.add(name)


def _fold_constants(graph: onnx.GraphProto) -> None:
    """Turn Constant nodes and Identity-of-initializer nodes into initializers."""
    initializers = {init.name: init for init in graph.initializer}
    graph_outputs = {out.name for out in graph.output}
    kept = []
    for node in graph.node:
        tensor = None
        if node.op_type == "Constant" and node.output[0] not in graph_outputs:
            tensor = _constant_tensor(node)
        elif (
            node.op_type == "Identity"
            and node.input[0] in initializers
            and node.output[0] not in graph_outputs
        ):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(initializers[node.input[0]])
        if tensor is None:
            kept.append(node)
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        initializers[tensor.name] = graph.initializer[-1]
    del graph.node[:]
    graph.node.extend(kept)


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attr.t)
            return tensor
        if attr.name in _SCALAR_CONSTANT_ATTRS:
            value = helper.get_attribute_value(attr)
            dims = [len(value)] if isinstance(value, list) else []
            values = value if isinstance(value, list) else [value]
            return helper.make_tensor("", _SCALAR_CONSTANT_ATTRS[attr.name], dims, values)
    return None  # sparse or string constants stay as nodes


def _drop_initializer_inputs(graph: onnx.GraphProto) -> None:
    """Old exporters (IR < 4) list every initializer as a graph input too; drop those."""
    names = {init.name for init in graph.initializer}
    real = [inp for inp in graph.input if inp.name not in names]
    if len(real) != len(graph.input):
        del graph.input[:]
        graph.input.extend(real)


def _drop_inert_allowzero(graph: onnx.GraphProto) -> None:
    """Remove ``allowzero=1`` from Reshapes whose constant target shape has no 0 in it.

    The dynamo exporter writes it on every Reshape; it only changes what a 0 in the target
    shape means, so without a 0 it is inert, and onnx2torch refuses Reshapes that carry it.
    """
    shapes = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in shapes:
            continue
        if 0 in numpy_helper.to_array(shapes[node.input[1]]).tolist():
            continue
        kept = [a for a in node.attribute if not (a.name == "allowzero" and a.i == 1)]
        if len(kept) != len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(kept)


def _raise_ir_version(model: onnx.ModelProto) -> None:
    """IR 4 is the first version in which initializers need not be graph inputs."""
    model.ir_version = max(model.ir_version, 4)


def initializer_arrays(graph: onnx.GraphProto) -> dict[str, numpy_helper.np.ndarray]:
    """All initializers of ``graph`` as numpy arrays, by name."""
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}
