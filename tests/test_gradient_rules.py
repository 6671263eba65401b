"""Every gradient rule against central finite differences of onnxruntime's own forward pass.

Each case is a small classifier (tests/graphs.classifier: image -> the op under test ->
Flatten -> Gemm) whose input gradient dlheatmap's gradient model computes in onnxruntime;
the truth is the central difference of the same file's class scores, element by element,
in float64 where onnxruntime runs every op of the case in float64 (float32 otherwise), at
random points (away from kinks and ties with probability 1 at these step sizes).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dlheatmap.graph import analyse, infer_shapes, normalise
from dlheatmap.graph.backward import (
    IMAGE_INPUT,
    INPUT_GRADIENTS_OUTPUT,
    RULES,
    TARGETS_INPUT,
    GradientRequest,
    Registry,
    build_gradient_model,
    rule,
)
from dlheatmap.graph.backward.registry import GradientRule
from tests.graphs import classifier
from tests.test_backward import built_op_types

SHAPE = (2, 2, 5, 6)  # N, C, H, W: C = 2 keeps the layout detection at NCHW
TARGETS = np.array([[0, 3], [4, 1]])


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _input_gradients(model: onnx.ModelProto, images: np.ndarray, flip: bool) -> np.ndarray:
    """[T, N, C, H, W] from dlheatmap's gradient model."""
    info = analyse(normalise(model))
    shapes = infer_shapes(info.model, (1, *images.shape[1:]))
    grad_model = build_gradient_model(info, GradientRequest(input_gradient="plain",
                                                            targets=TARGETS.shape[1]),
                                      shapes, images.shape[2:], flip_stride_one=flip)
    feed = {IMAGE_INPUT: images.transpose(0, 2, 3, 1), TARGETS_INPUT: TARGETS}
    (grads,) = _session(grad_model).run([INPUT_GRADIENTS_OUTPUT], feed)
    return grads.transpose(0, 1, 4, 2, 3)


def _differences(model: onnx.ModelProto, images: np.ndarray, step: float) -> np.ndarray:
    """[T, N, C, H, W] central differences of the target scores, all in one batched run."""
    session = _session(model)
    count = images[0].size
    result = np.zeros((TARGETS.shape[1], *images.shape))
    for n, image in enumerate(images):
        moves = np.eye(count).reshape(count, *image.shape) * step
        batch = np.concatenate([image + moves, image - moves]).astype(images.dtype)
        (scores,) = session.run(None, {"image": batch})
        for t, c in enumerate(TARGETS[n]):
            slope = (scores[:count, c].astype(np.float64) - scores[count:, c]) / (2 * step)
            result[t, n] = slope.reshape(image.shape)
    return result


def check(body, opset: int = 17, shape=SHAPE, positive: bool = False, flip: bool = True,
          seed: int = 0) -> None:
    """The input gradients of ``body``'s classifier equal finite differences."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.5 if positive else -2.0, 2.0, shape)
    for dtype, step, tol in ((np.float64, 1e-5, 1e-6), (np.float32, 1e-3, 4e-3)):
        model = classifier(body, shape, opset, dtype)
        try:
            _session(model)
        except (ort.capi.onnxruntime_pybind11_state.NotImplemented,
                ort.capi.onnxruntime_pybind11_state.InvalidGraph):
            continue  # an op onnxruntime runs in float32 only
        ours = _input_gradients(model, images.astype(dtype), flip)
        expected = _differences(model, images.astype(dtype), step)
        scale = np.abs(expected).max()
        assert scale > 0, "the case must have a non-zero gradient"
        np.testing.assert_allclose(ours, expected, atol=tol * scale, rtol=0)
        return
    raise AssertionError("no element type ran")


def op(op_type: str, *constants, **attrs):
    """A body applying one op to the image, with constant extra inputs ('' for absent)."""
    def body(g, x):
        inputs = [x] + [c if isinstance(c, str) else
                        g.const(c[0], np.int64) if isinstance(c, tuple) else
                        g.const(c, c.dtype) if isinstance(c, np.ndarray) else g.const(c)
                        for c in constants]
        return g.node(op_type, inputs, **attrs)

    return body


def ints(*values):
    """An int64 constant input for :func:`op`."""
    return (list(values),)


# --- convolutions -----------------------------------------------------------------------

def conv(out: int = 3, kernel=(3, 3), group: int = 1, **attrs):
    def body(g, x):
        return g.node("Conv", [x, g.weight(out, SHAPE[1] // group, *kernel)], group=group,
                      **attrs)

    return body


CONVS = {
    "plain": conv(),
    "padded": conv(pads=[1, 2, 0, 1]),
    "strided": conv(strides=[2, 2], pads=[1, 1, 1, 1]),
    "strided_odd": conv(strides=[2, 3], kernel=(2, 3)),
    "dilated": conv(dilations=[2, 2], pads=[2, 1, 2, 1]),
    "depthwise": conv(out=2, group=2, pads=[1, 1, 1, 1]),
    "depthwise_strided": conv(out=4, group=2, strides=[2, 2], pads=[1, 1, 1, 1]),
    "same_upper": conv(strides=[2, 2], auto_pad="SAME_UPPER"),
    "same_lower": conv(strides=[2, 2], auto_pad="SAME_LOWER"),
    "same_upper_stride1": conv(kernel=(2, 2), auto_pad="SAME_UPPER"),
    "valid": conv(auto_pad="VALID"),
    "large_pads": conv(kernel=(1, 1), pads=[1, 1, 1, 1]),  # pads past the kernel
}


@pytest.mark.parametrize("flip", [True, False], ids=["flipped_conv", "conv_transpose"])
@pytest.mark.parametrize("case", sorted(CONVS))
def test_conv(case, flip):
    check(CONVS[case], flip=flip)


def conv_transpose(out: int = 3, kernel=(3, 3), group: int = 1, **attrs):
    def body(g, x):
        return g.node("ConvTranspose", [x, g.weight(SHAPE[1], out // group, *kernel)],
                      group=group, **attrs)

    return body


@pytest.mark.parametrize("body", [
    conv_transpose(), conv_transpose(strides=[2, 2], pads=[1, 1, 1, 1]),
    conv_transpose(strides=[2, 2], output_padding=[1, 1]),
    conv_transpose(strides=[2, 2], pads=[1, 0, 0, 0], output_padding=[1, 1]),
    conv_transpose(out=2, group=2, dilations=[2, 2]),
], ids=["plain", "strided", "output_padding", "output_padding_past_pads", "grouped_dilated"])
def test_conv_transpose(body):
    check(body)


# --- pooling and reductions -------------------------------------------------------------

@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},  # windows past the end
    {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    {"kernel_shape": [2, 2], "strides": [1, 1], "dilations": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
], ids=["2x2", "3x3_padded", "stride1", "ceil_mode", "ceil_mode_overhang",
        "ceil_mode_padded", "dilated", "same_upper"])
def test_max_pool(attrs):
    check(op("MaxPool", **attrs))


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1},
    {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 0], "ceil_mode": 1,
     "count_include_pad": 1},
    {"kernel_shape": [2, 2], "strides": [1, 1], "auto_pad": "SAME_LOWER"},
], ids=["2x2", "1x1", "padded", "count_include_pad", "ceil_mode", "ceil_mode_include_pad",
        "same_lower"])
def test_average_pool(attrs):
    check(op("AveragePool", **attrs), opset=19)


@pytest.mark.parametrize("op_type", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pooling(op_type):
    check(op(op_type))


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("op_type", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"])
def test_reductions(op_type, keepdims, opset):
    def body(g, x):
        if opset >= 18 or op_type == "ReduceSum":
            return g.node(op_type, [x, g.const([1, 3], np.int64)], keepdims=keepdims)
        return g.node(op_type, [x], axes=[1, 3], keepdims=keepdims)

    check(body, opset=opset)


# --- shapes and selections --------------------------------------------------------------

SHAPE_CASES = {
    "identity": op("Identity"),
    "dropout": op("Dropout"),
    "cast": lambda g, x: g.node("Cast", [g.node("Cast", [x], to=onnx.TensorProto.DOUBLE)],
                                to=onnx.TensorProto.DOUBLE if g.dtype == np.float64
                                else onnx.TensorProto.FLOAT),
    "reshape": op("Reshape", ints(0, 6, -1)),
    "flatten": op("Flatten", axis=1),
    "squeeze_unsqueeze": lambda g, x: g.node("Squeeze", [
        g.node("Unsqueeze", [x, g.const([2], np.int64)]), g.const([2], np.int64)]),
    "transpose": op("Transpose", perm=[0, 1, 3, 2]),
    "expand": lambda g, x: g.node("Expand", [g.node("ReduceMean", [x, g.const([2], np.int64)]),
                                             g.const([1, 2, 3, 6], np.int64)]),
    "tile": op("Tile", ints(1, 2, 1, 3)),
    "concat": lambda g, x: g.node("Concat", [x, g.node("Neg", [x]), x], axis=3),
    "split": lambda g, x: _split(g, [x, g.const([2, 3, 1], np.int64)], 3, (0, 1, 2), axis=3),
    "split_unused": lambda g, x: _split(g, [x, g.const([2, 4], np.int64)], 2, (1,), axis=3),
    "slice": op("Slice", ints(1, -4), ints(4, 100), ints(2, 3)),
    "slice_negative_axes": op("Slice", ints(-3), ints(-1), ints(-1)),
    "pad": op("Pad", ints(0, 0, 1, 2, 0, 0, 2, 0)),
    "pad_negative": op("Pad", ints(0, 0, -1, 2, 0, 0, 1, -2)),
    "pad_axes": op("Pad", ints(1, 2, 0, 1), "", ints(2, 3)),
    "gather": op("Gather", ints(4, 0, 4, -1), axis=2),
    "gather_2d_indices": lambda g, x: g.node("Gather", [x, g.const([[1, 0], [0, 0]], np.int64)],
                                             axis=1),
    "gather_nd": lambda g, x: g.node("Transpose", [g.node("GatherND", [
        g.node("Transpose", [x], perm=[2, 3, 0, 1]), g.const([[0, 1], [3, 2], [0, 1]], np.int64)])],
        perm=[1, 0, 2]),
    "resize_nearest": op("Resize", "", np.float32([1, 1, 2, 2]), mode="nearest"),
    "resize_nearest_down": op("Resize", "", np.float32([1, 1, 0.5, 0.75]), mode="nearest",
                              nearest_mode="floor"),
    "resize_linear": op("Resize", "", np.float32([1, 1, 2.0, 1.5]), mode="linear",
                        coordinate_transformation_mode="half_pixel"),
    "resize_linear_corners": op("Resize", "", np.float32([1, 1, 1.5, 2.0]), mode="linear",
                                coordinate_transformation_mode="align_corners"),
    "resize_cubic": op("Resize", "", np.float32([1, 1, 2.0, 0.75]), mode="cubic"),
}


def _split(g, inputs: list[str], count: int, used: tuple[int, ...], **attrs) -> str:
    """A Split into ``count`` parts, of which ``used`` are scaled and concatenated."""
    first = g.node("Split", inputs, **attrs)
    g.nodes[-1].output.extend(f"{first}_{i}" for i in range(1, count))
    parts = [first] + [f"{first}_{i}" for i in range(1, count)]
    scaled = [g.node("Mul", [parts[i], g.const(1.0 + i)]) for i in used]
    return scaled[0] if len(scaled) == 1 else g.node("Concat", scaled, axis=attrs["axis"])


@pytest.mark.parametrize("case", sorted(SHAPE_CASES))
def test_shape_ops(case):
    check(SHAPE_CASES[case], opset=19)


def test_split_opset18():
    check(lambda g, x: _split(g, [x], 2, (0, 1), axis=1, num_outputs=2), opset=18)


def test_upsample_opset9():
    """An opset 9 Upsample is converted to Resize before the rules see it."""
    check(lambda g, x: g.node("Upsample", [x, g.const([1, 1, 2, 2], np.float32)],
                              mode="nearest"), opset=9)


def test_opset9_pad_clip_and_slice():
    def body(g, x):
        padded = g.node("Pad", [x], pads=[0, 0, 1, 0, 0, 0, 0, 1])
        clipped = g.node("Clip", [padded], min=-1.0, max=1.5)
        return g.node("Slice", [clipped], starts=[1], ends=[4], axes=[2])

    check(body, opset=9)


# --- activations ------------------------------------------------------------------------

ACTIVATIONS = {
    "relu": op("Relu"), "leaky_relu": op("LeakyRelu", alpha=0.2), "tanh": op("Tanh"),
    "sigmoid": op("Sigmoid"), "hard_sigmoid": op("HardSigmoid", alpha=0.3),
    "hard_swish": op("HardSwish"), "softplus": op("Softplus"), "erf": op("Erf"),
    "exp": op("Exp"), "neg": op("Neg"), "abs": op("Abs"),
    "clip": op("Clip", -1.0, 1.2), "relu6": op("Clip", 0.0, 1.0),
    "silu": lambda g, x: g.node("Mul", [x, g.node("Sigmoid", [x])]),
    "softmax": op("Softmax", axis=1), "softmax_last": op("Softmax"),
    "log_softmax": op("LogSoftmax", axis=2),
}


@pytest.mark.parametrize("case", sorted(ACTIVATIONS))
def test_activations(case):
    check(ACTIVATIONS[case])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    check(op("Gelu", approximate=approximate), opset=20)


def test_mish():
    check(op("Mish"), opset=18)


@pytest.mark.parametrize("case", ["log", "sqrt", "reciprocal", "pow_2", "pow_3", "pow_half"])
def test_positive_domain(case):
    bodies = {"log": op("Log"), "sqrt": op("Sqrt"), "reciprocal": op("Reciprocal"),
              "pow_2": op("Pow", 2.0), "pow_3": op("Pow", 3.0), "pow_half": op("Pow", 0.5)}
    check(bodies[case], positive=True)


# --- arithmetic with both operands variable ---------------------------------------------

ARITHMETIC = {
    "add_self": lambda g, x: g.node("Add", [x, g.node("Tanh", [x])]),
    "sub_broadcast": lambda g, x: g.node("Sub", [x, g.node("ReduceMean", [
        x, g.const([3], np.int64)])]),
    "mul_broadcast": lambda g, x: g.node("Mul", [x, g.node("Sigmoid", [
        g.node("GlobalAveragePool", [x])])]),  # squeeze-excitation
    "div_both": lambda g, x: g.node("Div", [x, g.node("Add", [g.node("Mul", [x, x]),
                                                              g.const(1.0)])]),
    "max": lambda g, x: g.node("Max", [x, g.node("Neg", [x]), g.const(0.3)]),
    "min_broadcast": lambda g, x: g.node("Min", [x, g.node("ReduceMax", [
        x, g.const([2], np.int64)], keepdims=1)]),
    "sum": lambda g, x: g.node("Sum", [x, g.node("Exp", [x]), x]),
    "mean": lambda g, x: g.node("Mean", [x, g.node("Tanh", [x])]),
}


@pytest.mark.parametrize("case", sorted(ARITHMETIC))
def test_arithmetic(case):
    check(ARITHMETIC[case], opset=18)


# --- dense layers and normalisation -----------------------------------------------------

def _tokens(g, x):
    """[N, 10, 6]: the image as 10 tokens of width 6."""
    return g.node("Reshape", [x, g.const([0, 10, 6], np.int64)])


def _attention(g, x):
    tokens = _tokens(g, x)
    keys = g.node("MatMul", [tokens, g.weight(6, 6)])
    scores = g.node("MatMul", [tokens, g.node("Transpose", [keys], perm=[0, 2, 1])])
    return g.node("MatMul", [g.node("Softmax", [scores], axis=-1), tokens])


def _decomposed_layer_norm(g, x):
    tokens = _tokens(g, x)
    mean = g.node("ReduceMean", [tokens, g.const([-1], np.int64)])
    centred = g.node("Sub", [tokens, mean])
    variance = g.node("ReduceMean", [g.node("Pow", [centred, g.const(2.0)]),
                                     g.const([-1], np.int64)])
    std = g.node("Sqrt", [g.node("Add", [variance, g.const(1e-5)])])
    return g.node("Add", [g.node("Mul", [g.node("Div", [centred, std]), g.weight(6)]),
                          g.weight(6)])


DENSE = {
    "matmul_constant": lambda g, x: g.node("MatMul", [_tokens(g, x), g.weight(6, 4)]),
    "attention": _attention,
    "gemm_hidden": lambda g, x: g.node("Gemm", [g.node("Flatten", [x]), g.weight(60, 7)],
                                       alpha=0.7),
    "gemm_trans_a": lambda g, x: g.node("Gemm", [
        g.node("Transpose", [g.node("Flatten", [x])], perm=[1, 0]), g.weight(7, 60)],
        transA=1, transB=1),
    "batchnorm": lambda g, x: g.node("BatchNormalization", [
        x, g.weight(2), g.weight(2), g.weight(2), g.const([0.5, 2.0])]),
    "layer_norm": lambda g, x: g.node("LayerNormalization", [_tokens(g, x), g.weight(6),
                                                             g.weight(6)], epsilon=1e-5),
    "layer_norm_two_axes": lambda g, x: g.node("LayerNormalization", [
        x, g.weight(5, 6)], axis=2),
    "decomposed_layer_norm": _decomposed_layer_norm,
}


@pytest.mark.parametrize("case", sorted(DENSE))
def test_dense_and_normalisation(case):
    check(DENSE[case], opset=18)


@pytest.mark.parametrize("opset", [9, 11, 13])
def test_older_opsets(opset):
    """Files of older opsets are converted; the gradients stay those of the file itself."""
    def body(g, x):
        pooled = g.node("MaxPool", [g.node("Relu", [x])], kernel_shape=[2, 2], strides=[1, 1])
        return g.node("Softmax", [g.node("Flatten", [pooled])], axis=1)

    check(body, opset=opset)


# --- the registry -----------------------------------------------------------------------

def test_every_rule_is_exercised():
    """Every registered rule has a case here or in tests/test_backward.py."""
    named = set()
    for cases in (CONVS, SHAPE_CASES, ACTIVATIONS, ARITHMETIC, DENSE):
        for body in cases.values():
            model = classifier(body, SHAPE, 20)
            named.update(node.op_type for node in model.graph.node)
    source = Path(__file__).read_text()
    named.update(op_type for op_type in RULES.op_types() if f'"{op_type}"' in source)
    assert RULES.op_types() - named - built_op_types() == set()


def test_no_rule_is_registered_twice_and_duplicates_are_refused():
    keys = list(RULES.keys())
    assert len(keys) == len(set(keys)) and len(keys) >= 55
    registry = Registry()

    @rule("Foo", registry=registry)
    def first(b, node, dy, needs):
        return {}

    with pytest.raises(ValueError, match="already registered"):
        rule("Foo", registry=registry)(first)
    rule("Foo", since=13, registry=registry)(first)  # another opset is another key
    assert registry.lookup("Foo", opset=12).apply is first
    assert isinstance(registry.lookup("Foo", opset=14), GradientRule)
    assert registry.lookup("Foo", domain="com.example") is None
    assert math.isfinite(len(keys))
