"""Grad-CAM's tail backward inside onnxruntime (dlheatmap.graph.backward) against torch.

Every gradient rule is exercised by a small hand-built graph whose tail (the nodes after the
target convolution) holds the op under test. The reference is torch autograd over the same
tail converted by onnx2torch (dlheatmap's torch engine, itself checked against captum in
test_heatmap.py): two independent ways of differentiating the same graph must agree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import helper

import dlheatmap as dl
from dlheatmap.engine import Targets
from dlheatmap.graph.backward import GradientRequest, gradient_model
from dlheatmap.methods import HALCON_SCALINGS, SCALINGS, GradCAM, normalize, upsample
from tests.engines import gather_layer, gather_map
from tests.graphs import Graph

CHANNELS, SIZE, CLASSES = Graph.CHANNELS, Graph.SIZE, Graph.CLASSES


def grad_cam_request(layer: str) -> GradientRequest:
    return GradientRequest(layer, head="grad_cam")


RNG = np.random.default_rng(7)  # images


def pooled(tail: Callable[[Graph, str, str], tuple[str, int]]):
    """A case whose tail ends in an N x C x h x w tensor, followed by GAP and a dense layer."""
    def build(g: Graph) -> str:
        skip, act = g.body()
        features, channels = tail(g, skip, act)
        return g.pooled_head(features, channels)

    return build


def _squeeze_excite(g: Graph, skip: str, act: str) -> tuple[str, int]:
    squeezed = g.node("GlobalAveragePool", [act])
    scale = g.node("Sigmoid", [g.node("Conv", [squeezed, g.weight(CHANNELS, CHANNELS, 1, 1)])])
    return g.node("Mul", [act, scale]), CHANNELS


def _transposed(g: Graph, skip: str, act: str) -> tuple[str, int]:
    nhwc = g.node("Relu", [g.node("Transpose", [act], perm=[0, 2, 3, 1])])
    return g.node("Transpose", [nhwc], perm=[0, 3, 1, 2]), CHANNELS


def _reshaped(g: Graph, skip: str, act: str) -> tuple[str, int]:
    flat = g.node("Reshape", [act, g.const([0, CHANNELS, -1], np.int64)])
    column = g.node("Unsqueeze", [g.node("Relu", [flat]), g.const([3], np.int64)])
    back = g.node("Squeeze", [column, g.const([3], np.int64)])
    return g.node("Reshape", [back, g.const([0, CHANNELS, SIZE, SIZE], np.int64)]), CHANNELS


def _batchnorm(g: Graph, skip: str, act: str) -> tuple[str, int]:
    stats = [g.const(g.rng.uniform(0.5, 1.5, CHANNELS)), g.weight(CHANNELS),
             g.weight(CHANNELS), g.const(g.rng.uniform(0.5, 2.0, CHANNELS))]
    return g.node("Relu", [g.node("BatchNormalization", [act, *stats], epsilon=1e-3)]), CHANNELS


def _strided_conv(**attrs):
    def tail(g: Graph, skip: str, act: str) -> tuple[str, int]:
        group = attrs.get("group", 1)
        kernel = attrs.pop("kernel", 3)
        weight = g.weight(6, CHANNELS // group, kernel, kernel)
        return g.node("Relu", [g.node("Conv", [act, weight], **attrs)]), 6

    return tail


def _reduce_mean_head(opset: int) -> Callable[[Graph], str]:
    def build(g: Graph) -> str:
        _, act = g.body()
        if opset >= 18:  # axes became an input
            mean = g.node("ReduceMean", [act, g.const([2, 3], np.int64)], keepdims=0)
        else:
            mean = g.node("ReduceMean", [act], axes=[2, 3], keepdims=0)
        return g.node("Gemm", [mean, g.weight(CLASSES, CHANNELS)], transB=1)

    return build


def _matmul_head(g: Graph) -> str:
    _, act = g.body()
    flat = g.node("Flatten", [g.node("GlobalAveragePool", [g.node("Relu", [act])])])
    return g.node("Add", [g.node("MatMul", [flat, g.weight(CHANNELS, CLASSES)]),
                          g.weight(CLASSES)])


def _gemm_head(g: Graph) -> str:
    """Gemm with transB = 0 and alpha != 1, then a hidden layer: the seed is not at the first
    dense layer, so both gradient forms of Gemm are used."""
    _, act = g.body()
    flat = g.node("Flatten", [g.node("GlobalAveragePool", [g.node("Relu", [act])])])
    hidden = g.node("Relu", [g.node("Gemm", [flat, g.weight(CHANNELS, 6), g.weight(6)],
                                    alpha=0.5)])
    return g.node("Gemm", [hidden, g.weight(6, CLASSES)], alpha=2.0)


def _softmax_head(g: Graph) -> str:
    return g.node("Softmax", [pooled(lambda g, s, a: (g.node("Relu", [a]), CHANNELS))(g)],
                  axis=1)


def _conv_classifier(g: Graph) -> str:
    """SqueezeNet style: a 1 x 1 convolution gives the class scores, shaped N x classes x 1 x 1."""
    _, act = g.body()
    pooled_ = g.node("GlobalAveragePool", [g.node("Relu", [act])])
    return g.node("Conv", [pooled_, g.weight(CLASSES, CHANNELS, 1, 1), g.weight(CLASSES)])


def _unary(op: str, *bounds, **attrs):
    def tail(g: Graph, skip: str, act: str) -> tuple[str, int]:
        inputs = [act, *(g.const(b) if b is not None else "" for b in bounds)]
        return g.node(op, inputs, **attrs), CHANNELS

    return tail


CASES: dict[str, tuple[Callable[[Graph], str], int]] = {
    "relu": (pooled(_unary("Relu")), 17),
    "leaky_relu": (pooled(_unary("LeakyRelu", alpha=0.1)), 17),
    "relu6": (pooled(_unary("Clip", 0.0, 6.0)), 17),
    "clip": (pooled(_unary("Clip", -0.5, 0.7)), 17),
    "clip_upper_only": (pooled(_unary("Clip", None, 0.5)), 17),  # onnx2torch: no
    "hard_sigmoid": (pooled(_unary("HardSigmoid", alpha=0.3, beta=0.4)), 17),
    "hard_swish": (pooled(_unary("HardSwish")), 17),
    "sigmoid": (pooled(_unary("Sigmoid")), 17),
    "tanh": (pooled(_unary("Tanh")), 17),
    "identity_dropout": (pooled(lambda g, s, a: (g.node("Dropout", [g.node("Identity", [a])]),
                                                 CHANNELS)), 17),
    "skip_add": (pooled(lambda g, s, a: (g.node("Relu", [g.node("Add", [a, s])]), CHANNELS)),
                 17),
    "sub_broadcast": (pooled(lambda g, s, a: (
        g.node("Sub", [g.weight(1, CHANNELS, 1, 1), a]), CHANNELS)), 17),
    "div": (pooled(lambda g, s, a: (g.node("Div", [a, g.const(2.5)]), CHANNELS)), 17),
    "squeeze_excite": (pooled(_squeeze_excite), 17),
    "squeeze_excite_opset11": (pooled(_squeeze_excite), 11),
    "squeeze_excite_opset13": (pooled(_squeeze_excite), 13),
    "batchnorm": (pooled(_batchnorm), 17),
    "concat": (pooled(lambda g, s, a: (g.node("Concat", [a, s, g.node("Relu", [a])], axis=1),
                                       3 * CHANNELS)), 17),
    "transpose": (pooled(_transposed), 17),
    "reshape": (pooled(_reshaped), 17),
    "conv_strided": (pooled(_strided_conv(strides=[2, 2], pads=[1, 1, 1, 1])), 17),
    "conv_grouped_dilated": (pooled(_strided_conv(group=2, dilations=[2, 2], pads=[2] * 4)),
                             17),
    "conv_same_upper": (pooled(_strided_conv(strides=[2, 2], auto_pad="SAME_UPPER")),
                        17),  # onnx2torch: no
    "conv_same_lower": (pooled(_strided_conv(strides=[2, 2], auto_pad="SAME_LOWER")),
                        17),  # onnx2torch: no
    "reduce_mean_opset13": (_reduce_mean_head(13), 13),
    "reduce_mean_opset18": (_reduce_mean_head(18), 18),
    "matmul_head": (_matmul_head, 17),
    "gemm_head": (_gemm_head, 17),
    "softmax_output": (_softmax_head, 17),
    "conv_classifier": (_conv_classifier, 17),
}


# Cases that onnx2torch cannot convert: torch differentiates an equivalent graph (same weights).
TORCH_EQUIVALENTS: dict[str, Callable[[Graph], str]] = {
    "clip_upper_only": pooled(_unary("Clip", float(np.finfo(np.float32).min), 0.5)),
    "conv_same_upper": pooled(_strided_conv(strides=[2, 2], pads=[0, 0, 1, 1])),
    "conv_same_lower": pooled(_strided_conv(strides=[2, 2], pads=[1, 1, 0, 0])),
}


def build_model(case: str, tmp_path, opset: int | None = None,
                build: Callable[[Graph], str] | None = None) -> dl.Model:
    default_build, case_opset = CASES[case]
    g = Graph(opset or case_opset)
    model = g.model((build or default_build)(g))
    onnx.checker.check_model(model)
    path = tmp_path / f"{case}{'-equivalent' if build else ''}.onnx"
    onnx.save(model, path)
    return dl.read_dl_model(path)


def gradients(model: dl.Model, images: np.ndarray, targets: Targets, engine: str):
    layer = model.info.by_name["target"].output
    return gather_layer(model, images, targets, layer, model.params, engine=engine)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_matches_torch_autograd(case, tmp_path):
    model = build_model(case, tmp_path)
    reference = model
    if case in TORCH_EQUIVALENTS:
        reference = build_model(case, tmp_path, build=TORCH_EQUIVALENTS[case])
    images = RNG.standard_normal((3, SIZE, SIZE, 3)).astype(np.float32)
    for targets in (Targets(), Targets(np.array([2])), Targets(np.array([[4], [0], [3]]))):
        ours = gradients(model, images, targets, "onnxruntime")
        torch_ = gradients(reference, images, targets, "torch")
        np.testing.assert_array_equal(ours.targets, torch_.targets)
        np.testing.assert_allclose(ours.probabilities, torch_.probabilities, rtol=1e-5,
                                   atol=1e-7)
        np.testing.assert_allclose(ours.activations, torch_.activations, rtol=1e-5, atol=1e-6)
        scale = np.abs(torch_.gradients).max()
        assert scale > 0, "the case must have a non-zero gradient to compare"
        np.testing.assert_allclose(ours.gradients, torch_.gradients, rtol=1e-4,
                                   atol=1e-5 * scale)


@pytest.mark.parametrize("case", ["relu", "conv_strided", "squeeze_excite_opset11",
                                  "reduce_mean_opset18"])
@pytest.mark.parametrize("scaling", SCALINGS)
def test_grad_cam_in_the_graph_matches_numpy(case, scaling, tmp_path):
    """The map and heatmap onnxruntime computes equal dlheatmap.methods' numpy pipeline
    (weights, weighted sum, bilinear resize, scaling) on the same activations and gradients."""
    model = build_model(case, tmp_path)
    images = RNG.standard_normal((4, SIZE, SIZE, 3)).astype(np.float32)
    layer = model.info.by_name["target"].output
    ours = gather_map(model, images, Targets(), layer, model.params, scaling)
    passed = gather_layer(model, images, Targets(), layer, model.params, engine="onnxruntime")
    np.testing.assert_array_equal(ours.targets, passed.targets)
    maps = GradCAM().map(passed.activations, passed.gradients[0])
    np.testing.assert_allclose(ours.cam_maps[:, 0], maps, rtol=1e-5, atol=1e-6 * np.abs(maps).max())
    expected = normalize(upsample(maps, SIZE, SIZE), HALCON_SCALINGS[scaling])
    assert ours.heatmaps[:, 0].shape == expected.shape and ours.heatmaps[:, 0].dtype == np.float32
    np.testing.assert_allclose(ours.heatmaps[:, 0], expected, rtol=1e-5,
                               atol=1e-6 * max(np.abs(expected).max(), 1.0))


def _negative_evidence(g: Graph) -> str:
    """Positive activations (positive weights on positive inputs) and a class whose dense
    weights are all negative: its Grad-CAM map is negative everywhere."""
    first = g.node("Conv", ["image", g.const(np.abs(g.rng.normal(size=(CHANNELS, 3, 3, 3))))],
                   pads=[1] * 4)
    g.nodes.append(helper.make_node(
        "Conv", [g.node("Relu", [first]),
                 g.const(np.abs(g.rng.normal(size=(CHANNELS, CHANNELS, 3, 3)))),
                 g.const(np.ones(CHANNELS))], ["act"], name="target", pads=[1] * 4))
    pooled_ = g.node("Flatten", [g.node("GlobalAveragePool", [g.node("Relu", ["act"])])])
    return g.node("Gemm", [pooled_, g.const(-np.abs(g.rng.normal(size=(CLASSES, CHANNELS))))],
                  transB=1)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_all_negative_map_gives_an_all_zero_heatmap(scaling, tmp_path):
    """Scaling never divides by zero: a map without positive values is all zero, not NaN."""
    model = build_model("relu", tmp_path, build=_negative_evidence)
    layer = model.info.by_name["target"].output
    images = np.abs(RNG.standard_normal((2, SIZE, SIZE, 3))).astype(np.float32)
    passed = gather_map(model, images, Targets(np.array([0])), layer, model.params, scaling)
    assert (passed.cam_maps[:, 0] < 0).all()
    np.testing.assert_array_equal(passed.heatmaps[:, 0], 0.0)


def test_top_class_is_the_most_probable(tmp_path):
    model = build_model("relu", tmp_path)
    images = RNG.standard_normal((6, SIZE, SIZE, 3)).astype(np.float32)
    ours = gradients(model, images, Targets(), "onnxruntime")
    expected = dl.apply_dl_model(model, [{"image": i} for i in images])
    assert ours.targets[:, 0].tolist() == [r["classification_class_ids"][0] for r in expected]


def built_op_types() -> set[str]:
    """The op types the cases here put in their tails (tests/test_gradient_rules.py checks
    that every registered rule is exercised here or there)."""
    built = set()
    for build, opset in CASES.values():
        g = Graph(opset)
        build(g)
        built.update(node.op_type for node in g.nodes)
    return built


def _unsupported_tail(g: Graph) -> str:
    _, act = g.body()
    pooled_ = g.node("LRN", [g.node("Relu", [act])], size=3)  # no gradient rule
    return g.pooled_head(pooled_, CHANNELS)


def test_tail_without_a_rule_is_differentiated_in_torch(tmp_path):
    CASES["maxpool"] = (_unsupported_tail, 17)
    try:
        model = build_model("maxpool", tmp_path)
    finally:
        del CASES["maxpool"]
    layer = model.info.by_name["target"].output
    assert gradient_model(model.info, grad_cam_request(layer), model.tensor_shapes(),
                          (SIZE, SIZE)) is None
    images = RNG.standard_normal((2, SIZE, SIZE, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="onnxruntime"):
        gather_layer(model, images, Targets(), layer, model.params, engine="onnxruntime")
    auto = gather_layer(model, images, Targets(), layer, model.params)
    torch_ = gather_layer(model, images, Targets(), layer, model.params, engine="torch")
    np.testing.assert_array_equal(auto.gradients, torch_.gradients)


def _divided_by_itself(g: Graph) -> str:
    _, act = g.body()
    base = g.node("Add", [g.node("Sigmoid", [act]), g.const(1.0)])
    return g.pooled_head(g.node("Pow", [base, g.node("Relu", [act])]), CHANNELS)


def test_gradient_through_an_input_a_rule_cannot_take_uses_torch(tmp_path):
    """Pow's rule differentiates the base only: an exponent that depends on the layer must
    send the whole tail to torch, not be silently treated as a constant."""
    model = build_model("relu", tmp_path, build=_divided_by_itself)
    layer = model.info.by_name["target"].output
    assert gradient_model(model.info, grad_cam_request(layer), model.tensor_shapes(),
                          (SIZE, SIZE)) is None
    images = RNG.standard_normal((2, SIZE, SIZE, 3)).astype(np.float32)
    auto = gather_layer(model, images, Targets(), layer, model.params)
    torch_ = gather_layer(model, images, Targets(), layer, model.params, engine="torch")
    np.testing.assert_array_equal(auto.gradients, torch_.gradients)


def test_old_opsets_are_converted_and_differentiated_in_onnxruntime(tmp_path):
    """An opset 10 file is converted to the gradient opset; its gradients match torch's."""
    model = build_model("relu", tmp_path, opset=10)
    layer = model.info.by_name["target"].output
    assert gradient_model(model.info, grad_cam_request(layer), model.tensor_shapes(),
                          (SIZE, SIZE)) is not None
    images = RNG.standard_normal((2, SIZE, SIZE, 3)).astype(np.float32)
    ours = gradients(model, images, Targets(), "onnxruntime")
    torch_ = gradients(model, images, Targets(), "torch")
    np.testing.assert_allclose(ours.gradients, torch_.gradients, rtol=1e-4,
                               atol=1e-5 * np.abs(torch_.gradients).max())


def test_several_classes_per_sample_run_on_onnxruntime(tmp_path):
    """Several classes per sample, and the probability as the score, are one onnxruntime run
    (a backward chain per class) and equal the torch engine's gradients."""
    model = build_model("relu", tmp_path)
    images = RNG.standard_normal((2, SIZE, SIZE, 3)).astype(np.float32)
    layer = model.info.by_name["target"].output
    targets = Targets(np.array([[0, 1], [2, 3]]))
    for score in ("logit", "probability"):
        ours = gather_layer(model, images, targets, layer, model.params, score=score,
                            engine="onnxruntime")
        theirs = gather_layer(model, images, targets, layer, model.params, score=score,
                              engine="torch")
        np.testing.assert_array_equal(ours.targets, [[0, 1], [2, 3]])
        peak = np.abs(theirs.gradients).max()
        np.testing.assert_allclose(ours.gradients, theirs.gradients, atol=1e-5 * peak, rtol=0)
