"""Grad-CAM's backward pass as ONNX nodes, so that onnxruntime computes it with the forward pass.

Grad-CAM needs the gradient of one class score with respect to a layer's activation. The layers
after the target layer (the "tail": pooling, a classifier, a few activations) are usually
small, so their backward pass is a handful of element-wise ops and one matrix product per
dense layer. :func:`gradient_model` appends those ops to the model itself: one onnxruntime run
then returns the model's output, the activation, the gradient and the classes it was taken
for, at little more than the cost of an inference. Where a tail holds an op that has no rule
here, there is no gradient model and dlheatmap differentiates the tail in torch instead.

The rules form a registry keyed by ONNX op type (:data:`RULES`). Each rule receives the
node, the gradient arriving at its first output, and the input positions that need a
gradient; it appends nodes through a :class:`GradientBuilder` and returns the gradient of each
such input. At the points where a derivative is undefined (a ReLU at 0, a clip bound) the rules
take the gradient as 0, as torch's ReLU and hardtanh do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dlheatmap.graph.analysis import GraphInfo, LayerInfo
from dlheatmap.graph.subgraph import tail_nodes

IMAGE_INPUT = "dlheatmap_image"  # float32 N x H x W x C: HALCON's layout, whatever the model's
TARGET_INPUT = "dlheatmap_target_class"  # int64 [N]: a class index per sample, -1 = top class
SCALING_INPUT = "dlheatmap_scaling"  # float32 [3]: see scaling_input()
GRADIENT_OUTPUT = "dlheatmap_gradient"  # d score / d activation, shaped like the activation
CHOSEN_OUTPUT = "dlheatmap_chosen_class"  # int64 [N]: the class index each gradient is for
CAM_OUTPUT = "dlheatmap_grad_cam"  # float32 [N, h, w]: the Grad-CAM map at the layer's size
HEATMAP_OUTPUT = "dlheatmap_heatmap"  # float32 [N, 1, H, W]: resized to the image and scaled

MIN_OPSET = 11  # OneHot, Clip with bound inputs, Slice with inputs
_STEM = "dlheatmap_grad/"

# Ops whose outputs do not depend differentiably on their inputs (shapes, indices, masks):
# gradients never flow through them, so they need no rule.
NON_DIFFERENTIABLE = frozenset({
    "Shape", "Size", "ArgMax", "ArgMin", "NonZero", "Equal", "Greater", "GreaterOrEqual",
    "Less", "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "Sign", "Floor",
    "Ceil", "Round", "ConstantOfShape", "EyeLike", "RandomNormalLike", "RandomUniformLike",
})


class UnsupportedGradientError(Exception):
    """The tail cannot be differentiated in the graph (an op or attribute without a rule)."""


# --- building nodes -------------------------------------------------------------------------

@dataclass
class GradientBuilder:
    """Appends gradient nodes to a graph; what every rule writes with.

    ``shapes`` are the tensors' shapes for one image at the current input size (batch 1); rules
    use them for sizes that are fixed for a given input size (pooling areas, channel splits).
    """

    info: GraphInfo
    shapes: dict[str, tuple]
    opset: int
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    # gradient tensor -> tensor of class indices, where the gradient is the one-hot seed
    seeds: dict[str, str] = field(default_factory=dict)
    # tensors whose nodes are written only once a node reads them (name -> writer)
    pending: dict[str, Callable[[], None]] = field(default_factory=dict)
    _count: int = 0
    _constants: dict[tuple, str] = field(default_factory=dict)
    _initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    _spread: dict[str, str] = field(default_factory=dict)

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{_STEM}{stem}_{self._count}"

    def add(self, op_type: str, inputs: Iterable[str], name: str | None = None, **attrs) -> str:
        """Append one node; returns the name of its (single) output."""
        inputs = list(inputs)
        for tensor in inputs:
            if tensor in self.pending:
                self.pending.pop(tensor)()
        output = name or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output],
                                           name=self.fresh(op_type), **attrs))
        return output

    def rename(self, tensor: str, name: str) -> None:
        """Give a tensor written by these nodes another name (an output's, say)."""
        for node in self.nodes:
            for names in (node.input, node.output):
                for i, old in enumerate(names):
                    if old == tensor:
                        names[i] = name

    def constant(self, value, dtype=np.float32) -> str:
        """An initializer holding ``value`` (scalars and small arrays are shared)."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes()) if array.size <= 16 else None
        if key is not None and key in self._constants:
            return self._constants[key]
        name = self.fresh("const")
        self.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            self._constants[key] = name
        return name

    def initializer(self, tensor: str) -> np.ndarray | None:
        """The value of a graph initializer, or None if ``tensor`` is not one."""
        if not self._initializers:
            self._initializers = {init.name: init for init in self.info.model.graph.initializer}
        proto = self._initializers.get(tensor)
        return None if proto is None else numpy_helper.to_array(proto)

    def shape(self, tensor: str) -> tuple[int, ...]:
        shape = self.shapes.get(tensor)
        if shape is None or any(not isinstance(dim, int) for dim in shape):
            raise UnsupportedGradientError(f"the shape of {tensor!r} is unknown")
        return tuple(shape)

    def spread(self, gradient: str, tensor: str) -> str:
        """Mark ``gradient`` as one that broadcasts to ``tensor``'s shape, expanded only when a
        rule needs its exact shape (:meth:`exact`)."""
        self._spread[gradient] = tensor
        return gradient

    def exact(self, gradient: str) -> str:
        """``gradient`` with its full shape (expanded, if it was spread)."""
        tensor = self._spread.get(gradient)
        if tensor is None:
            return gradient
        return self.add("Expand", [gradient, self.add("Shape", [tensor])])

    def like(self, gradient: str, tensor: str) -> str:
        """``gradient`` reshaped to ``tensor``'s runtime shape."""
        return self.add("Reshape", [gradient, self.add("Shape", [tensor])])

    def mask(self, condition: str) -> str:
        """A boolean tensor as 0.0 / 1.0. Multiplying by it is much faster in onnxruntime than
        ``Where`` with a scalar operand (about 10 x on a 376k-element tensor)."""
        return self.add("Cast", [condition], to=TensorProto.FLOAT)

    def masked(self, gradient: str, condition: str) -> str:
        """``gradient`` where ``condition`` holds, 0 elsewhere."""
        return self.add("Mul", [gradient, self.mask(condition)])

    def reduce(self, op_type: str, tensor: str, axes: list[int]) -> str:
        """ReduceSum, ReduceMean, ReduceMax, ... over ``axes``, keeping them (axes became an
        input of ReduceSum in opset 13, of the other reductions in opset 18)."""
        if self.opset < (13 if op_type == "ReduceSum" else 18):
            return self.add(op_type, [tensor], axes=axes, keepdims=1)
        return self.add(op_type, [tensor, self.constant(axes, np.int64)], keepdims=1)

    def unsqueeze(self, tensor: str, axes: list[int]) -> str:
        if self.opset < 13:
            return self.add("Unsqueeze", [tensor], axes=axes)
        return self.add("Unsqueeze", [tensor, self.constant(axes, np.int64)])

    def unbroadcast(self, gradient: str, tensor: str, output: str) -> str:
        """Sum ``gradient`` (shaped like ``output``) over the axes ``tensor`` was broadcast
        along, giving a gradient shaped like ``tensor``."""
        source, target = self.shape(tensor), self.shape(output)
        if source == target:
            return gradient
        lead = len(target) - len(source)
        axes = list(range(lead)) + [lead + axis for axis, dim in enumerate(source)
                                    if dim == 1 and target[lead + axis] != 1]
        summed = self.reduce("ReduceSum", gradient, axes) if axes else gradient
        return self.like(summed, tensor) if lead else summed


# --- the registry ---------------------------------------------------------------------------

Rule = Callable[[GradientBuilder, onnx.NodeProto, str, tuple[int, ...]], dict[int, str]]


@dataclass(frozen=True)
class GradientRule:
    """How to differentiate one op type.

    ``inputs`` are the positions through which gradients flow (shape inputs, for example, carry
    none; None: all of them); ``computes`` those of them ``apply`` can differentiate (a weight
    that depends on the layer has no rule here); ``apply`` returns a gradient for each position
    it is asked for.
    """

    apply: Rule
    inputs: tuple[int, ...] | None = (0,)
    computes: tuple[int, ...] | None = None  # the positions apply() handles; None: inputs
    activation: bool = False  # multiplies the gradient by a factor of the input's full shape

    def handles(self, positions: tuple[int, ...]) -> bool:
        allowed = self.inputs if self.computes is None else self.computes
        return allowed is None or set(positions) <= set(allowed)

    def carries(self, position: int) -> bool:
        return self.inputs is None or position in self.inputs


RULES: dict[str, GradientRule] = {}


def rule(
    *op_types: str,
    inputs: tuple[int, ...] | None = (0,),
    computes: tuple[int, ...] | None = None,
    activation: bool = False,
) -> Callable[[Rule], Rule]:
    """Register ``fn`` as the gradient rule of ``op_types``.

    An ``activation`` rule multiplies the incoming gradient by a factor shaped like its input,
    so it may receive a gradient that still has to be spread over that shape (pooling's
    N x C x 1 x 1): the product spreads it, and no separate pass is needed.
    """
    def register(fn: Rule) -> Rule:
        for op_type in op_types:
            RULES[op_type] = GradientRule(fn, inputs, computes, activation)
        return fn

    return register


def _attrs(node: onnx.NodeProto) -> dict:
    return {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}


def _single_input(fn: Callable[[GradientBuilder, onnx.NodeProto, str], str]) -> Rule:
    """A rule for an op whose only differentiable input is its first."""
    def apply(b: GradientBuilder, node: onnx.NodeProto, dy: str, needs) -> dict[int, str]:
        return {0: fn(b, node, dy)}

    return apply


# --- rules: shape-only ops ------------------------------------------------------------------

@rule("Identity", "Dropout")  # Dropout is the identity at inference
def _identity(b, node, dy, needs):
    if node.op_type == "Dropout" and _attrs(node).get("training_mode"):
        raise UnsupportedGradientError("Dropout in training mode")
    return {0: dy}


@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(b, node, dy, needs):
    return {0: b.like(dy, node.input[0])}


@rule("Transpose")
def _transpose(b, node, dy, needs):
    perm = _attrs(node).get("perm")
    if perm is None:
        perm = list(reversed(range(len(b.shape(node.input[0])))))
    return {0: b.add("Transpose", [dy], perm=[int(i) for i in np.argsort(perm)])}


@rule("Concat", inputs=None)
def _concat(b, node, dy, needs):
    rank = len(b.shape(node.output[0]))
    axis = _attrs(node)["axis"] % rank
    if axis == 0:
        raise UnsupportedGradientError("Concat along the batch axis")
    grads, start = {}, 0
    for position, tensor in enumerate(node.input):
        stop = start + b.shape(tensor)[axis]
        if position in needs:
            grads[position] = b.add("Slice", [dy, b.constant([start], np.int64),
                                              b.constant([stop], np.int64),
                                              b.constant([axis], np.int64)])
        start = stop
    return grads


# --- rules: activations ---------------------------------------------------------------------

@rule("Relu", activation=True)
@_single_input
def _relu(b, node, dy):
    return b.masked(dy, b.add("Greater", [node.output[0], b.constant(0.0)]))


@rule("LeakyRelu", activation=True)
@_single_input
def _leaky_relu(b, node, dy):
    alpha = _attrs(node).get("alpha", 0.01)
    positive = b.mask(b.add("Greater", [node.input[0], b.constant(0.0)]))
    slope = b.add("Add", [b.add("Mul", [positive, b.constant(1.0 - alpha)]), b.constant(alpha)])
    return b.add("Mul", [dy, slope])


@rule("Clip", inputs=(0, 1, 2), computes=(0,), activation=True)
@_single_input
def _clip(b, node, dy):
    low, high = _clip_bounds(b, node)
    x = node.input[0]
    inside = None
    if low is not None:
        inside = b.add("Greater", [x, b.constant(low)])
    if high is not None:
        below = b.add("Less", [x, b.constant(high)])
        inside = below if inside is None else b.add("And", [inside, below])
    return dy if inside is None else b.masked(dy, inside)


def _clip_bounds(b: GradientBuilder, node: onnx.NodeProto) -> tuple[float | None, float | None]:
    bounds = []  # inputs since opset 11 (MIN_OPSET)
    for position in (1, 2):
        name = node.input[position] if len(node.input) > position else ""
        if not name:
            bounds.append(None)
            continue
        value = b.initializer(name)
        if value is None or value.size != 1:
            raise UnsupportedGradientError("Clip with bounds computed in the graph")
        bounds.append(float(value.reshape(())))
    return bounds[0], bounds[1]


@rule("HardSigmoid", activation=True)
@_single_input
def _hard_sigmoid(b, node, dy):
    attrs = _attrs(node)
    alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
    z = b.add("Add", [b.add("Mul", [node.input[0], b.constant(alpha)]), b.constant(beta)])
    inside = b.add("And", [b.add("Greater", [z, b.constant(0.0)]),
                           b.add("Less", [z, b.constant(1.0)])])
    return b.masked(b.add("Mul", [dy, b.constant(alpha)]), inside)


@rule("HardSwish", activation=True)
@_single_input
def _hard_swish(b, node, dy):
    # d/dx x * hardsigmoid(x) = hardsigmoid(x) + x / 6 where |x| <= 3: 0 below -3, x / 3 + 1/2
    # up to 3 (both ends included, as torch has it), 1 above
    x = node.input[0]
    inner = b.mask(b.add("LessOrEqual", [b.add("Abs", [x]), b.constant(3.0)]))  # opset >= 14
    ramp = b.add("Mul", [b.add("Mul", [x, b.constant(1 / 6)]), inner])
    slope = b.add("Add", [b.add("HardSigmoid", [x], alpha=1 / 6, beta=0.5), ramp])
    return b.add("Mul", [dy, slope])


@rule("Sigmoid", activation=True)
@_single_input
def _sigmoid(b, node, dy):
    y = node.output[0]
    return b.add("Mul", [dy, b.add("Mul", [y, b.add("Sub", [b.constant(1.0), y])])])


@rule("Tanh", activation=True)
@_single_input
def _tanh(b, node, dy):
    y = node.output[0]
    return b.add("Mul", [dy, b.add("Sub", [b.constant(1.0), b.add("Mul", [y, y])])])


# --- rules: arithmetic ----------------------------------------------------------------------

@rule("Add", "Sub", inputs=(0, 1))
def _add(b, node, dy, needs):
    grads = {}
    for position in needs:
        grad = dy
        if node.op_type == "Sub" and position == 1:
            grad = b.add("Neg", [dy])
        grads[position] = b.unbroadcast(grad, node.input[position], node.output[0])
    return grads


@rule("Mul", inputs=(0, 1))
def _mul(b, node, dy, needs):
    return {position: b.unbroadcast(b.add("Mul", [dy, node.input[1 - position]]),
                                    node.input[position], node.output[0])
            for position in needs}


@rule("Div", inputs=(0, 1), computes=(0,))
def _div(b, node, dy, needs):
    return {0: b.unbroadcast(b.add("Div", [dy, node.input[1]]), node.input[0], node.output[0])}


# --- rules: pooling and normalisation -------------------------------------------------------

@rule("GlobalAveragePool")
@_single_input
def _global_average_pool(b, node, dy):
    x = node.input[0]
    area = int(np.prod(b.shape(x)[2:]))
    return b.spread(b.add("Mul", [dy, b.constant(1.0 / area)]), x)


@rule("ReduceMean")
@_single_input
def _reduce_mean(b, node, dy):
    x = node.input[0]
    shape = b.shape(x)
    attrs = _attrs(node)
    axes = attrs.get("axes")
    if len(node.input) > 1 and node.input[1]:
        value = b.initializer(node.input[1])
        if value is None:
            raise UnsupportedGradientError("ReduceMean with axes computed in the graph")
        axes = value.tolist()
    if not axes:
        raise UnsupportedGradientError("ReduceMean over all axes")
    axes = sorted(axis % len(shape) for axis in axes)
    if 0 in axes:
        raise UnsupportedGradientError("ReduceMean over the batch axis")
    if not attrs.get("keepdims", 1):
        dy = b.unsqueeze(dy, axes)
    return b.spread(b.add("Mul", [dy, b.constant(1.0 / np.prod([shape[a] for a in axes]))]), x)


@rule("BatchNormalization", inputs=(0, 1, 2, 3, 4), computes=(0,))
@_single_input
def _batch_normalization(b, node, dy):
    attrs = _attrs(node)
    if attrs.get("training_mode") or len(node.output) > 1:
        raise UnsupportedGradientError("BatchNormalization in training mode")
    scale, variance = (b.initializer(node.input[i]) for i in (1, 4))
    if scale is None or variance is None:
        raise UnsupportedGradientError("BatchNormalization with statistics computed in the graph")
    rank = len(b.shape(node.input[0]))
    factor = scale / np.sqrt(variance + attrs.get("epsilon", 1e-5))
    return b.add("Mul", [dy, b.constant(factor.reshape(-1, *[1] * (rank - 2)))])


# --- rules: linear layers -------------------------------------------------------------------

@rule("Gemm", inputs=(0, 1, 2), computes=(0,))
def _gemm(b, node, dy, needs):
    attrs = _attrs(node)
    alpha = attrs.get("alpha", 1.0)
    trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)
    chosen = b.seeds.get(dy)
    if chosen is not None and not trans_a:
        # the gradient of one class score: that class's row of the weight matrix
        if trans_b:
            grad = b.add("Gather", [node.input[1], chosen], axis=0)
        else:
            grad = b.add("Transpose", [b.add("Gather", [node.input[1], chosen], axis=1)],
                         perm=[1, 0])
        return {0: grad if alpha == 1.0 else b.add("Mul", [grad, b.constant(alpha)])}
    # d/dA' of alpha * A' B' is alpha * dY B'^T: a Gemm on the model's own weights, transposed
    # by the flag, so that no second copy of them is made
    grad = b.add("Gemm", [dy, node.input[1]], alpha=float(alpha), transB=0 if trans_b else 1)
    return {0: b.add("Transpose", [grad], perm=[1, 0]) if trans_a else grad}


@rule("MatMul", inputs=(0, 1), computes=(0,))
def _matmul(b, node, dy, needs):
    weight = b.initializer(node.input[1])
    if weight is None or weight.ndim != 2:
        raise UnsupportedGradientError("MatMul whose right operand is not a constant matrix")
    chosen = b.seeds.get(dy)
    flat = len(b.shape(node.input[0])) == 2
    if chosen is not None and flat:
        column = b.add("Gather", [node.input[1], chosen], axis=1)
        return {0: b.add("Transpose", [column], perm=[1, 0])}
    if flat:  # dY W^T on the model's own weights
        return {0: b.add("Gemm", [dy, node.input[1]], transB=1)}
    return {0: b.add("MatMul", [dy, b.constant(weight.T)])}


@rule("Conv", inputs=(0, 1, 2), computes=(0,))
def _conv(b, node, dy, needs):
    weight = b.initializer(node.input[1])
    if weight is None:  # a weight computed from constants, say
        raise UnsupportedGradientError("Conv whose weight is not an initializer")
    attrs = _attrs(node)
    x_size, y_size = b.shape(node.input[0])[2:], b.shape(node.output[0])[2:]
    kernel = weight.shape[2:]
    spatial = len(kernel)
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    pads = _conv_pads(attrs, x_size, kernel, strides, dilations)
    # the transposed convolution's natural size, and the rows and columns it must add
    natural = [(y - 1) * s + (k - 1) * d + 1 - begin - end for y, s, k, d, begin, end in zip(
        y_size, strides, kernel, dilations, pads[:spatial], pads[spatial:], strict=True)]
    extra = [x - n for x, n in zip(x_size, natural, strict=True)]
    if any(e < 0 or e >= max(s, d) for e, s, d in zip(extra, strides, dilations, strict=True)):
        raise UnsupportedGradientError("Conv whose input size a transposed convolution misses")
    grad = b.add("ConvTranspose", [dy, node.input[1]], kernel_shape=list(kernel), pads=pads,
                 strides=strides, dilations=dilations, group=attrs.get("group", 1),
                 output_padding=extra)
    return {0: grad}


def _conv_pads(attrs: dict, size, kernel, strides, dilations) -> list[int]:
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    spatial = len(kernel)
    if auto_pad in ("NOTSET", ""):
        return list(attrs.get("pads", [0] * 2 * spatial))
    if auto_pad == "VALID":
        return [0] * 2 * spatial
    begins, ends = [], []
    for x, k, s, d in zip(size, kernel, strides, dilations, strict=True):
        total = max((-(-x // s) - 1) * s + (k - 1) * d + 1 - x, 0)
        small = total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else total - small)
        ends.append(total - begins[-1])
    return begins + ends


# --- the gradient model ---------------------------------------------------------------------

def gradient_model(
    info: GraphInfo, layer_tensor: str, shapes: dict[str, tuple], image_size: tuple[int, int]
) -> onnx.ModelProto | None:
    """``info``'s model extended with Grad-CAM: the backward pass to ``layer_tensor``, the map
    and the heatmap.

    The model takes :data:`IMAGE_INPUT` (float32 images in HALCON's N x H x W x C layout: the
    model's own layout is a Transpose inside the graph, cheaper than one in numpy),
    :data:`TARGET_INPUT` (int64 [N]: the class index to explain per sample, -1 for its most
    probable class) and :data:`SCALING_INPUT` (the normalisation, see :func:`scaling_input`).
    It returns the model output, the activation, :data:`GRADIENT_OUTPUT` (d score / d
    activation, where the score is the logit before a final Softmax),
    :data:`CHOSEN_OUTPUT` (the class indices used), :data:`CAM_OUTPUT` (the Grad-CAM map at the
    layer's resolution, before any ReLU) and :data:`HEATMAP_OUTPUT` (that map resized to
    ``image_size`` (height, width) and scaled). The map and heatmap follow spec/decisions.md
    exactly as :mod:`dlheatmap.methods` computes them in numpy; computing them here saves
    several passes over image-sized arrays after the run.

    Returns None when the tail has an op or attribute without a gradient rule, or the model's
    opset or element type is not covered; the caller then differentiates in torch.
    """
    opset = next((o.version for o in info.model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET or info.score_tensor is None or not info.num_classes:
        return None
    if info.image_input.dtype != np.float32 or (
            info.value_types.get(layer_tensor) is not None
            and info.value_types[layer_tensor].tensor_type.elem_type != TensorProto.FLOAT):
        return None
    builder = GradientBuilder(info, shapes, opset)
    try:
        chosen = _chosen_classes(builder)
        gradient = _backward(builder, layer_tensor, chosen)
        if len(builder.shape(layer_tensor)) != 4:
            raise UnsupportedGradientError("the layer's output is not N x C x h x w")
    except UnsupportedGradientError:
        return None
    builder.rename(gradient, GRADIENT_OUTPUT)
    _grad_cam(builder, layer_tensor, GRADIENT_OUTPUT, image_size)
    return _assemble(info, builder, layer_tensor)


def _chosen_classes(b: GradientBuilder) -> str:
    info = b.info
    scores = info.output_name
    if len(b.shape(scores)) != 2:  # [N, classes, 1, 1]
        scores = b.add("Flatten", [scores], axis=1)
    top = b.add("ArgMax", [scores], axis=1, keepdims=0)
    wants_top = b.add("Less", [TARGET_INPUT, b.constant(0, np.int64)])
    return b.add("Where", [wants_top, top, TARGET_INPUT], name=CHOSEN_OUTPUT)


def _backward(b: GradientBuilder, layer_tensor: str, chosen: str) -> str:
    info = b.info
    nodes, _ = tail_nodes(info, layer_tensor, info.score_tensor)
    carrying = _carrying_gradients(nodes, layer_tensor)
    seed = _seed(b, chosen)
    grads = {info.score_tensor: seed}
    for layer in reversed(nodes):
        dy = grads.get(layer.output)
        if dy is None or layer.op_type in NON_DIFFERENTIABLE:
            continue
        if any(out in grads for out in layer.outputs[1:]):
            raise UnsupportedGradientError(f"{layer.op_type} with several differentiated outputs")
        rule_ = RULES[layer.op_type]
        needs = tuple(i for i, name in enumerate(layer.inputs)
                      if name in carrying and rule_.carries(i))
        if not rule_.handles(needs):
            raise UnsupportedGradientError(f"{layer.op_type} with a gradient through inputs "
                                           f"{needs}")
        node = info.model.graph.node[layer.index]
        dy = dy if rule_.activation else b.exact(dy)
        for position, grad in rule_.apply(b, node, dy, needs).items():
            name = layer.inputs[position]
            if name in grads:
                grad = b.add("Add", [b.exact(grads[name]), b.exact(grad)])
            grads[name] = grad
    if layer_tensor not in grads:
        raise UnsupportedGradientError("the score does not depend on the layer")
    return b.exact(grads[layer_tensor])


def _grad_cam(b: GradientBuilder, activation: str, gradient: str, size: tuple[int, int]) -> None:
    """Grad-CAM's map and heatmap from the activation and its gradient (spec/decisions.md)."""
    _, channels, height, width = b.shape(activation)
    # channel weights: the gradient's mean over the layer's height and width
    weights = b.reduce("ReduceMean", gradient, [2, 3])
    # the map: a weighted sum of channels, one matrix product per sample ([1, C] x [C, h w])
    flat = b.add("Reshape", [activation, b.constant([0, channels, height * width], np.int64)])
    row = b.add("Reshape", [weights, b.constant([0, 1, channels], np.int64)])
    cam = b.add("Reshape", [b.add("MatMul", [row, flat]),
                            b.constant([0, 1, height, width], np.int64)])
    b.add("Reshape", [cam, b.constant([0, height, width], np.int64)], name=CAM_OUTPUT)
    # bilinear, half-pixel centres, edges clamped: torch's align_corners=False
    resized = _resize(b, cam, size)
    # every scaling is ReLU, then division by a per-map divisor (see scaling_input); one that
    # is not positive means an all-zero map, kept as it is
    top = b.reduce("ReduceMax", resized, [2, 3])
    bottom = b.reduce("ReduceMin", resized, [2, 3])
    weights = [f"{SCALING_INPUT}/{i}" for i in range(3)]
    parts = {"num_outputs": 3} if b.opset >= 18 else {}  # required from opset 18 on
    b.nodes.append(helper.make_node("Split", [SCALING_INPUT], weights, axis=0,
                                    name=b.fresh("Split"), **parts))
    divisor = b.add("Max", [b.add("Mul", [top, weights[0]]),
                            b.add("Mul", [bottom, weights[1]]), weights[2]])
    positive = b.add("Greater", [divisor, b.constant(0.0)])
    divisor = b.add("Where", [positive, divisor, b.constant(1.0)])
    b.add("Div", [b.add("Relu", [resized]), divisor], name=HEATMAP_OUTPUT)


def _resize(b: GradientBuilder, maps: str, size: tuple[int, int]) -> str:
    """N x 1 x h x w maps resized bilinearly to N x 1 x height x width."""
    options = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    if b.opset >= 18:  # the sizes of the last two axes alone
        return b.add("Resize", [maps, "", "", b.constant(list(size), np.int64)], axes=[2, 3],
                     **options)
    # sizes of all four axes; roi and scales are optional inputs since opset 13, empty before
    sizes = b.add("Concat", [b.add("Slice", [b.add("Shape", [maps]), b.constant([0], np.int64),
                                             b.constant([2], np.int64)]),
                             b.constant(list(size), np.int64)], axis=0)
    unused = "" if b.opset >= 13 else b.constant(np.zeros(0, np.float32))
    return b.add("Resize", [maps, unused, unused, sizes], **options)


# The heatmap head's normalisations (dlheatmap.methods.normalize's names): weights (a, b, c)
# of the divisor max(a * maximum, b * minimum, c) of each resized map, the ReLU coming first in
# all three (the same as after a division by a positive number). 'max' divides by the maximum
# (HALCON's 'scale_after_relu'), 'abs_max_relu' by the maximum absolute value
# ('scale_before_relu'), 'relu' by 1 ('none').
HEAD_DIVISORS = {"max": (1, 0, 0), "abs_max_relu": (1, -1, 0), "relu": (0, 0, 1)}


def scaling_input(mode: str) -> np.ndarray:
    """:data:`SCALING_INPUT` for the normalisation ``mode`` (a key of :data:`HEAD_DIVISORS`)."""
    return np.array(HEAD_DIVISORS[mode], np.float32)


def _seed(b: GradientBuilder, chosen: str) -> str:
    """d score / d scores: one-hot rows of the chosen classes, shaped like the score tensor.

    Written only if a rule reads it: through a classifier's dense layer, the gradient of one
    class score is that class's weight row (a Gather of the chosen classes), no one-hot needed.
    """
    info = b.info
    seed = b.fresh("seed")

    def write() -> None:
        one_hot = b.add("OneHot", [chosen, b.constant([info.num_classes], np.int64),
                                   b.constant([0.0, 1.0])], axis=-1)
        if len(b.shape(info.score_tensor)) != 2:
            one_hot = b.like(one_hot, info.score_tensor)
        b.add("Identity", [one_hot], name=seed)

    b.pending[seed] = write
    b.seeds[seed] = chosen
    return seed


def _carrying_gradients(nodes: list[LayerInfo], layer_tensor: str) -> set[str]:
    """Tensors that depend differentiably on ``layer_tensor``; every node producing one must
    have a rule."""
    carrying = {layer_tensor}
    for layer in nodes:
        if layer.op_type in NON_DIFFERENTIABLE:
            continue
        rule_ = RULES.get(layer.op_type)
        if any(name in carrying and (rule_ is None or rule_.carries(position))
               for position, name in enumerate(layer.inputs)):
            if rule_ is None:
                raise UnsupportedGradientError(f"no gradient rule for {layer.op_type}")
            carrying.update(out for out in layer.outputs if out)
    return carrying


def _assemble(info: GraphInfo, b: GradientBuilder, layer_tensor: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(info.model)
    graph = model.graph
    batch = _halcon_layout_input(graph, info)
    graph.input.append(helper.make_tensor_value_info(TARGET_INPUT, TensorProto.INT64, [batch]))
    graph.input.append(helper.make_tensor_value_info(SCALING_INPUT, TensorProto.FLOAT, [3]))
    graph.node.extend(b.nodes)
    graph.initializer.extend(b.initializers)
    for tensor in (layer_tensor, GRADIENT_OUTPUT, CHOSEN_OUTPUT, CAM_OUTPUT, HEATMAP_OUTPUT):
        graph.output.append(helper.make_empty_tensor_value_info(tensor))
    return model


def _halcon_layout_input(graph: onnx.GraphProto, info: GraphInfo) -> int | str:
    """Replace the image input by :data:`IMAGE_INPUT` in HALCON's layout; returns its batch
    dimension."""
    image = info.image_input
    old = next(value for value in graph.input if value.name == image.name)
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or f"d{i}")
            for i, d in enumerate(old.type.tensor_type.shape.dim)]
    if image.layout == "NCHW":
        dims = [dims[0], dims[2], dims[3], dims[1]]
        bridge = helper.make_node("Transpose", [IMAGE_INPUT], [image.name], perm=[0, 3, 1, 2],
                                  name=f"{_STEM}to_nchw")
    else:
        bridge = helper.make_node("Identity", [IMAGE_INPUT], [image.name], name=f"{_STEM}image")
    graph.input.remove(old)
    graph.input.insert(0, helper.make_tensor_value_info(IMAGE_INPUT, TensorProto.FLOAT, dims))
    graph.node.insert(0, bridge)
    return dims[0]
