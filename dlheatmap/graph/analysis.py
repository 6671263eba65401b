"""What dlheatmap needs to know about an ONNX graph.

``analyse`` inspects a normalised graph once: the image input and its layout, the
classification output and whether it ends in Softmax, the layers (nodes) with their HALCON
kinds, parameter counts and consumers. Shapes depend on the input size and are computed on
demand by ``infer_shapes``.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import onnx
from onnx import helper

from dlheatmap.graph.layers import clip_bounds, is_relu_clip, layer_kind

# Ops that only rearrange a tensor; looking through them from the output finds a final Softmax.
_SHAPE_ONLY_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
_SOFTMAX_OPS = {"Softmax": "probabilities", "LogSoftmax": "log_probabilities"}
_METADATA_CLASS_KEYS = ("class_names", "classes", "labels", "names", "class_labels")

Shape = tuple  # entries are int, or None where unknown


@dataclass(frozen=True)
class ImageInput:
    """The graph's image input."""

    name: str
    layout: str  # 'NCHW' or 'NHWC'
    batch: int | None  # None: dynamic batch dimension
    channels: int | None
    height: int | None  # None: symbolic, taken from image_height
    width: int | None
    dtype: np.dtype

    def dims(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The input shape for a batch of ``batch`` images of height x width."""
        channels = self.channels or 3
        if self.layout == "NHWC":
            return (batch, height, width, channels)
        return (batch, channels, height, width)


@dataclass(frozen=True)
class LayerInfo:
    """One ONNX node as a HALCON-style layer."""

    index: int
    name: str
    op_type: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    num_params: int
    consumers: tuple[int, ...] = field(default=())

    @property
    def output(self) -> str:
        return self.outputs[0]


@dataclass
class GraphInfo:
    """Static facts about a normalised ONNX graph."""

    model: onnx.ModelProto
    layers: list[LayerInfo]
    image_input: ImageInput | None
    output_name: str | None
    num_classes: int | None
    model_type: str
    output_kind: str  # 'logits', 'probabilities' or 'log_probabilities'
    score_tensor: str | None  # tensor whose gradient explains a class: logit before Softmax
    metadata_class_names: list[str] | None

    @cached_property
    def by_name(self) -> dict[str, LayerInfo]:
        return {layer.name: layer for layer in self.layers}

    @cached_property
    def producer(self) -> dict[str, LayerInfo]:
        return {out: layer for layer in self.layers for out in layer.outputs if out}

    @cached_property
    def consumers(self) -> dict[str, list[LayerInfo]]:
        table: dict[str, list[LayerInfo]] = {}
        for layer in self.layers:
            for name in layer.inputs:
                table.setdefault(name, []).append(layer)
        return table

    @cached_property
    def nhwc_tensors(self) -> frozenset[str]:
        """Tensors laid out N x H x W x C: an NHWC image input and what element-wise ops make
        of it before the Transpose to NCHW (tf2onnx, Keras). ONNX's Conv, pooling and the ops
        after them are channels-first, so every other tensor is N x C x ..."""
        image = self.image_input
        if image is None or image.layout != "NHWC":
            return frozenset()
        found, frontier = {image.name}, [image.name]
        while frontier:
            for layer in self.consumers.get(frontier.pop(), []):
                if layer.op_type in _LAYOUT_PRESERVING_OPS and layer.output not in found:
                    found.add(layer.output)
                    frontier.append(layer.output)
        return frozenset(found)

    @cached_property
    def initializer_names(self) -> frozenset[str]:
        return frozenset(init.name for init in self.model.graph.initializer)

    @cached_property
    def value_types(self) -> dict[str, onnx.TypeProto]:
        """Tensor types as ONNX infers them from the graph's own input shape.

        Dimensions that the file fixes (channel counts, and spatial sizes where the input's are
        fixed) are concrete; those that follow a symbolic input dimension stay symbolic. Graphs
        cut from this one take their input types from here, so that converters which read a
        static size (onnx2torch's LayerNormalization does) see it.
        """
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model, strict_mode=False)
        except Exception:  # best effort, as in infer_shapes below
            inferred = self.model
        graph = inferred.graph
        return {info.name: info.type for info in [*graph.input, *graph.value_info, *graph.output]
                if info.type.HasField("tensor_type")}

    def fused_activation(self, conv: LayerInfo) -> LayerInfo | None:
        """The ReLU directly after ``conv`` (through one BatchNormalization), if any.

        ``Clip`` with a lower bound of 0 (ReLU6 and friends) counts as a ReLU, as HALCON's
        ReLU layer has an optional upper bound.
        """
        step = self._single_consumer(conv.output)
        if step is not None and step.op_type == "BatchNormalization":
            step = self._single_consumer(step.output)
        if step is not None and (step.op_type == "Relu" or self._is_relu_clip(step)):
            return step
        return None

    def _single_consumer(self, tensor: str) -> LayerInfo | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 else None

    def _is_relu_clip(self, layer: LayerInfo) -> bool:
        if layer.op_type != "Clip":
            return False
        try:
            low, _ = clip_bounds(self.model.graph.node[layer.index], self.constant)
        except ValueError:
            return False
        return is_relu_clip(low)

    def constant(self, tensor: str) -> np.ndarray | None:
        """The value of initializer ``tensor``, or None if it is not one."""
        proto = self._initializers.get(tensor)
        return None if proto is None else onnx.numpy_helper.to_array(proto)

    @cached_property
    def _initializers(self) -> dict[str, onnx.TensorProto]:
        return {init.name: init for init in self.model.graph.initializer}


def analyse(model: onnx.ModelProto) -> GraphInfo:
    """Inspect a normalised ONNX model."""
    graph = model.graph
    layers = _layers(graph)
    image_input = _image_input(graph, layers)
    outputs = list(graph.output)
    output_name = outputs[0].name if len(outputs) == 1 else None
    output_dims = _output_dims(model, image_input) if len(outputs) == 1 else None
    num_classes = _num_classes(output_dims)
    model_type = _model_type(image_input, len(outputs), output_dims, num_classes)
    output_kind, score_tensor = _score(layers, output_name)
    return GraphInfo(
        model=model,
        layers=layers,
        image_input=image_input,
        output_name=output_name,
        num_classes=num_classes,
        model_type=model_type,
        output_kind=output_kind,
        score_tensor=score_tensor,
        metadata_class_names=_metadata_class_names(model, num_classes),
    )


def _layers(graph: onnx.GraphProto) -> list[LayerInfo]:
    sizes = {
        init.name: int(np.prod(init.dims)) if init.dims else 1
        for init in graph.initializer
        if init.data_type in _FLOAT_TYPES
    }
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    layers = []
    for index, node in enumerate(graph.node):
        users = sorted({user for out in node.output for user in consumers.get(out, [])})
        layers.append(
            LayerInfo(
                index=index,
                name=node.name,
                op_type=node.op_type,
                kind=layer_kind(node.op_type),
                inputs=tuple(node.input),
                outputs=tuple(node.output),
                num_params=sum(sizes.get(name, 0) for name in node.input),
                consumers=tuple(users),
            )
        )
    return layers


_FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
     onnx.TensorProto.BFLOAT16}
)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None] | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    # paddle2onnx and others write -1 (or 0) for a dynamic dimension instead of a dim_param.
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in tensor_type.shape.dim
    ]


def _image_input(graph: onnx.GraphProto, layers: list[LayerInfo]) -> ImageInput | None:
    if len(graph.input) != 1:
        return None
    value_info = graph.input[0]
    dims = _dims(value_info)
    elem_type = value_info.type.tensor_type.elem_type
    if dims is None or len(dims) != 4 or elem_type not in _FLOAT_TYPES:
        return None
    layout = _layout(graph, value_info.name, dims, layers)
    if layout == "NHWC":
        batch, height, width, channels = dims
    else:
        batch, channels, height, width = dims
    return ImageInput(
        name=value_info.name,
        layout=layout,
        batch=batch,
        channels=channels,
        height=height,
        width=width,
        dtype=np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)),
    )


# Ops that keep an image tensor's layout; tf2onnx and Keras put normalisation (Cast, Sub, Div)
# in front of the NHWC -> NCHW Transpose.
_LAYOUT_PRESERVING_OPS = frozenset({
    "Cast", "Identity", "Add", "Sub", "Mul", "Div", "Clip", "Relu", "Neg", "Abs", "Sqrt",
})
_NHWC_TO_NCHW = [0, 3, 1, 2]


def _layout(
    graph: onnx.GraphProto, input_name: str, dims: list[int | None], layers: list[LayerInfo]
) -> str:
    """NHWC when the input reaches a Transpose to NCHW through element-wise ops only (tf2onnx,
    Keras preprocessing), or when its last axis is clearly the channel axis; NCHW otherwise."""
    consumers: dict[str, list[LayerInfo]] = {}
    for layer in layers:
        for name in layer.inputs:
            consumers.setdefault(name, []).append(layer)
    frontier, seen = [input_name], set()
    while frontier:
        for layer in consumers.get(frontier.pop(), []):
            if layer.index in seen:
                continue
            seen.add(layer.index)
            if layer.op_type == "Transpose":
                if _perm(graph.node[layer.index]) == _NHWC_TO_NCHW:
                    return "NHWC"
            elif layer.op_type in _LAYOUT_PRESERVING_OPS:
                frontier.append(layer.output)
    channel_like = (1, 3, 4)
    if dims[3] in channel_like and dims[1] not in channel_like:
        return "NHWC"
    return "NCHW"


def _perm(node: onnx.NodeProto) -> list[int] | None:
    for attr in node.attribute:
        if attr.name == "perm":
            return list(attr.ints)
    return None


def _output_dims(model: onnx.ModelProto, image_input: ImageInput | None) -> list | None:
    """The single output's dimensions; where the file leaves any but the batch dimension
    unknown, as inferred for one image at the input's own size (224 x 224 where that is
    symbolic)."""
    dims = _dims(model.graph.output[0])
    if dims is not None and len(dims) >= 2 and None not in dims[1:]:
        return dims
    if image_input is None:
        return dims
    size = (image_input.height or 224, image_input.width or 224)
    name = model.graph.output[0].name
    inferred = infer_shapes(model, image_input.dims(1, *size)).get(name)
    return list(inferred) if inferred is not None else dims


def _num_classes(dims: list | None) -> int | None:
    """Classes of a [batch, classes] or [batch, classes, 1, 1] output."""
    if dims is None:
        return None
    if len(dims) == 2 or (len(dims) == 4 and dims[2:] == [1, 1]):
        return dims[1]
    return None


def _model_type(
    image_input: ImageInput | None, num_outputs: int, output_dims: list | None,
    num_classes: int | None,
) -> str:
    """'classification' for one image input and one [batch, classes] output.

    Other graphs keep a descriptive type so that the operators can refuse them clearly.
    """
    if image_input is None:
        return "generic"
    if num_outputs != 1:
        return "detection"
    if num_classes is not None:
        return "classification"
    if output_dims is not None and len(output_dims) == 4:
        return "segmentation"
    return "generic"


def _score(layers: list[LayerInfo], output_name: str | None) -> tuple[str, str | None]:
    """Whether the output is logits or (log-)probabilities, and the tensor to differentiate."""
    if output_name is None:
        return "logits", None
    producer = {out: layer for layer in layers for out in layer.outputs}
    tensor = output_name
    while tensor in producer:
        layer = producer[tensor]
        if layer.op_type in _SOFTMAX_OPS:
            return _SOFTMAX_OPS[layer.op_type], layer.inputs[0]
        if layer.op_type not in _SHAPE_ONLY_OPS:
            break
        tensor = layer.inputs[0]
    return "logits", output_name


def undefined_ops(model: onnx.ModelProto) -> str:
    """A sentence naming the nodes whose op ONNX does not define (custom domains, typos), for
    error messages when onnxruntime cannot load a graph; '' if there are none."""
    versions = {opset.domain: opset.version for opset in model.opset_import}
    unknown = []
    for node in model.graph.node:
        domain = "" if node.domain == "ai.onnx" else node.domain
        if not onnx.defs.has(node.op_type, domain):
            label = f"{domain}:{node.op_type}" if domain else node.op_type
            unknown.append(f"op {label!r} (opset {versions.get(domain)}) in node {node.name!r}")
    if not unknown:
        return ""
    return "; ops ONNX does not define: " + ", ".join(unknown)


def _metadata_class_names(model: onnx.ModelProto, num_classes: int | None) -> list[str] | None:
    """Class names stored in the file's metadata_props, if they match the class count."""
    props = {prop.key.lower(): prop.value for prop in model.metadata_props}
    for key in _METADATA_CLASS_KEYS:
        if key in props:
            names = _parse_names(props[key])
            if names and (num_classes is None or len(names) == num_classes):
                return names
    return None


# What parsing free-form metadata text may raise: malformed text (ValueError, SyntaxError),
# unhashable dict keys such as "{[1]: 2}" (TypeError), nesting deeper than the parsers recurse
# (RecursionError).
_PARSE_ERRORS = (ValueError, SyntaxError, TypeError, RecursionError)
_INDEX_TEXT = re.compile(r"\d{1,18}")  # a dict key such as '11'; longer ones are no index


def _parse_names(text: str) -> list[str] | None:
    """Class names from a metadata value: a JSON or Python list, an {index: name} dict, or
    comma-separated text; None where the value is none of these.

    Exporters write free-form text into metadata_props, so this never raises: anything odd
    (mixed or unhashable keys, nested values, unparseable brackets) gives None, and the model
    keeps its default names.
    """
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except _PARSE_ERRORS:
            continue
        if isinstance(value, (dict, list, tuple)):
            return _names_from(value)
    if text.lstrip().startswith(("[", "{", "(")):
        return None  # a list or dict that could not be read: splitting it would give garbage
    parts = [part.strip() for part in text.replace("\n", ",").split(",")]
    return [part for part in parts if part] or None


def _names_from(value: dict | list | tuple) -> list[str] | None:
    """The names of a parsed list, or of a dict in the numeric order of its class indices."""
    if isinstance(value, dict):
        indices = [_class_index(key) for key in value]
        if None in indices or len(set(indices)) != len(indices):
            return None  # not {index: name}, or '1' and 1 both given
        items = [value[key] for _, key in sorted(zip(indices, value, strict=True))]
    else:
        items = list(value)
    if not all(_is_name(item) for item in items):
        return None
    return [str(item) for item in items] or None


def _class_index(key: object) -> int | None:
    """A dict key as a class index: a non-negative int or integer text, else None."""
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return key
    if isinstance(key, str) and _INDEX_TEXT.fullmatch(key.strip()):
        return int(key)
    return None


def _is_name(item: object) -> bool:
    """Plain names only: a nested list or None in a list of names means it is something else."""
    return isinstance(item, (str, int, float)) and not isinstance(item, bool)


def infer_shapes(model: onnx.ModelProto, input_dims: tuple[int, ...]) -> dict[str, Shape]:
    """Shapes of all tensors for a concrete input shape, as far as ONNX can infer them."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, input_dims, strict=True):
        dim.Clear()
        dim.dim_value = value
    for value_info in list(fixed.graph.value_info):
        fixed.graph.value_info.remove(value_info)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception:  # shape inference is best effort; callers probe what stays unknown
        inferred = fixed
    shapes: dict[str, Shape] = {}
    graph = inferred.graph
    for value_info in [*graph.input, *graph.value_info, *graph.output]:
        dims_ = _dims(value_info)
        if dims_ is not None and all(d is not None for d in dims_):
            shapes[value_info.name] = tuple(dims_)
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes
