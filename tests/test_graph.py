"""Graph normalisation and analysis on the forms real ONNX files come in.

Truths: onnxruntime on the original (un-normalised) file, the torch module a file was exported
from (autograd, forward hooks), node names written out by hand from the naming rule in
spec/decisions.md, and the error codes the issue documents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import dlheatmap as dl
from dlheatmap.errors import HOperatorError
from dlheatmap.graph import analyse, load_model, normalise, tail_nodes
from tests import graphs, models, zoo
from tests.conftest import random_images
from tests.engines import gather_layer
from tests.graphs import tensor, weight
from tests.reference import nchw

OPSET = 17


# --- helpers ------------------------------------------------------------------------------

def session(model_or_path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model_or_path.SerializeToString() if isinstance(
        model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run(model_or_path, x: np.ndarray) -> np.ndarray:
    sess = session(model_or_path)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def images(count: int, height: int, width: int, channels: int = 3, seed: int = 3):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (count, height, width, channels)).astype(np.float32)


def probabilities_from_file(path, imgs: np.ndarray, layout: str, head: str) -> np.ndarray:
    out = np.concatenate([run(path, zoo.to_layout(imgs[i : i + 1], layout))
                          for i in range(len(imgs))])
    return np.exp(zoo.log_probabilities(out, head))


def assert_apply_matches(model, imgs: np.ndarray, expected: np.ndarray) -> None:
    results = dl.apply_dl_model(model, [{"image": image} for image in imgs])
    for result, probs in zip(results, expected, strict=True):
        got = np.zeros_like(probs)
        got[result["classification_class_ids"]] = result["classification_confidences"]
        np.testing.assert_allclose(got, probs, rtol=1e-4, atol=1e-6)


def grad_cam_maps(model, imgs: np.ndarray, gen_param=None) -> np.ndarray:
    results = dl.gen_dl_model_heatmap(model, [{"image": i} for i in imgs], "grad_cam", [],
                                      gen_param)
    return np.stack([next(iter(r["heatmap_grad_cam"].values())) for r in results])


def guided_maps(model, imgs: np.ndarray) -> np.ndarray:
    results = dl.gen_dl_model_heatmap(model, [{"image": i} for i in imgs], "guided_grad_cam",
                                      [], None)
    return np.stack([next(iter(r["heatmap_guided_grad_cam"].values())) for r in results])


def torch_grad_cam(module, imgs: np.ndarray, layer) -> np.ndarray:
    """Grad-CAM of each image's top logit at ``layer`` of a torch module, upsampled
    (bilinear, half-pixel centres) and scaled after ReLU: an implementation independent of
    dlheatmap."""
    store = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: store.update(act=out))
    x = nchw(imgs)
    try:
        logits = module(x).reshape(len(imgs), -1)
    finally:
        handle.remove()
    top = logits.argmax(dim=1)
    (grads,) = torch.autograd.grad(logits.gather(1, top[:, None]).sum(), store["act"])
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = (weights * store["act"]).sum(dim=1, keepdim=True).detach()
    cam = torch.nn.functional.interpolate(cam, size=imgs.shape[1:3], mode="bilinear",
                                          align_corners=False)[:, 0].relu()
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-30)
    return (cam / peak[:, None, None]).numpy()


def conv_head(x: str, channels: int, classes: int, nodes: list, inits: list) -> str:
    """GlobalAveragePool, Flatten, Gemm: appended to ``nodes``; returns the output name."""
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["scores"], name="fc", transB=1),
    ]
    inits += [weight("fc_w", classes, channels), weight("fc_b", classes)]
    return "scores"


# --- Identity and Constant folding ---------------------------------------------------------

def test_identity_of_initializer_weights_are_folded():
    """Older torch.onnx.export wrote deduplicated weights as Identity(initializer); onnx2torch
    stops on them with a KeyError, dlheatmap folds them into initializers."""
    from onnx2torch import convert

    path = models.identity_weights_cnn()
    original = onnx.load(path)
    assert sum(node.op_type == "Identity" for node in original.graph.node) >= 5
    with pytest.raises(KeyError, match="onnx::"):
        convert(original)

    normalised = load_model(path)
    assert not [n for n in normalised.graph.node if n.op_type in ("Identity", "Constant")]
    inits = {init.name for init in normalised.graph.initializer}
    for node in normalised.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert node.input[1] in inits
    # the user's nodes keep their names, in order
    assert [n.name for n in normalised.graph.node] == [
        n.name for n in original.graph.node if n.op_type not in ("Identity", "Constant")]
    x = zoo.to_layout(images(2, 32, 32), "NCHW")
    np.testing.assert_array_equal(run(normalised, x), run(path, x))

    model = dl.read_dl_model(path)
    imgs = images(2, 32, 32)
    assert_apply_matches(model, imgs, probabilities_from_file(path, imgs, "NCHW", "logits"))
    module = models.variant_module()
    np.testing.assert_allclose(grad_cam_maps(model, imgs), torch_grad_cam(module, imgs,
                                                                          module.conv3),
                               atol=1e-4)
    assert np.isfinite(guided_maps(model, imgs[:1])).all()


def constant_node_model() -> onnx.ModelProto:
    """Every weight and shape as a Constant node, in each attribute form, and an Identity of
    a Constant, as paddle2onnx and hand-written graphs have them."""
    rng = np.random.default_rng(5)
    conv_w = numpy_helper.from_array(rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32))
    bias = numpy_helper.from_array(rng.normal(0, 0.1, (6,)).astype(np.float32))
    fc_w = numpy_helper.from_array(rng.normal(0, 0.3, (6, 4)).astype(np.float32))
    nodes = [
        helper.make_node("Constant", [], ["w"], value=conv_w),
        helper.make_node("Constant", [], ["b0"], value=bias),
        helper.make_node("Identity", ["b0"], ["b"]),
        helper.make_node("Conv", ["image", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Constant", [], ["gain"], value_float=1.5),
        helper.make_node("Mul", ["c", "gain"], ["m"], name="scale"),
        helper.make_node("Relu", ["m"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Constant", [], ["shape"], value_ints=[-1, 6]),
        helper.make_node("Reshape", ["p", "shape"], ["flat"], name="reshape"),
        helper.make_node("Constant", [], ["fc_w"], value=fc_w),
        helper.make_node("MatMul", ["flat", "fc_w"], ["scores"], name="fc"),
    ]
    return graphs.model(nodes, [tensor("image", ["N", 3, 16, 16])], [tensor("scores", ["N", 4])])


def test_constant_nodes_become_initializers(tmp_path):
    original = constant_node_model()
    path = graphs.save(original, tmp_path / "model.onnx")
    normalised = load_model(path)
    assert [n.op_type for n in normalised.graph.node] == [
        "Conv", "Mul", "Relu", "GlobalAveragePool", "Reshape", "MatMul"]
    assert {"w", "b0", "b", "gain", "shape", "fc_w"} <= {
        i.name for i in normalised.graph.initializer}
    x = zoo.to_layout(images(3, 16, 16), "NCHW")
    np.testing.assert_array_equal(run(normalised, x), run(original, x))

    model = dl.read_dl_model(path)
    imgs = images(2, 16, 16)
    assert_apply_matches(model, imgs, probabilities_from_file(path, imgs, "NCHW", "logits"))
    assert model.default_target_layer().name == "conv"
    assert np.isfinite(grad_cam_maps(model, imgs)).all()
    assert np.isfinite(guided_maps(model, imgs[:1])).all()


def test_constant_that_is_a_graph_output_stays_a_node():
    nodes = [helper.make_node("Constant", [], ["k"], value_float=2.0, name="k_node"),
             helper.make_node("Mul", ["x", "k"], ["y"], name="mul")]
    model = graphs.model(nodes, [tensor("x", [1, 2])], [tensor("y", [1, 2]), tensor("k", [])])
    normalised = normalise(model)
    assert [n.name for n in normalised.graph.node] == ["k_node", "mul"]
    x = np.ones((1, 2), np.float32)
    np.testing.assert_array_equal(session(normalised).run(None, {"x": x})[1],
                                  session(model).run(None, {"x": x})[1])


def test_packaged_constant_node_model_is_unchanged_numerically():
    """rapidocr's PP-OCR classifier keeps all 308 weights as Constant nodes."""
    path = models.rapidocr_direction()
    original = onnx.load(path)
    assert sum(n.op_type == "Constant" for n in original.graph.node) > 100
    normalised = load_model(path)
    assert not [n for n in normalised.graph.node if n.op_type == "Constant"]
    x = zoo.to_layout(images(2, 48, 192), "NCHW")
    np.testing.assert_allclose(run(normalised, x), run(path, x), rtol=1e-6, atol=1e-7)


def test_constant_subgraph_feeding_a_reshape_is_part_of_a_cut():
    """A Reshape target built from Cast(initializer) (paddle2onnx) must come along when the
    graph is cut at the input, else the converted graph reads an undefined tensor."""
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Cast", ["shape64"], ["shape32"], name="cast_a", to=6),
        helper.make_node("Cast", ["shape32"], ["shape"], name="cast_b", to=7),
        helper.make_node("Reshape", ["p", "shape"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "fc_w"], ["scores"], name="fc"),
    ]
    inits = [weight("w", 5, 3, 3, 3), weight("fc_w", 5, 2),
             numpy_helper.from_array(np.array([-1, 5], np.int64), "shape64")]
    model = graphs.model(nodes, [tensor("image", ["N", 3, 8, 8])], [tensor("scores", ["N", 2])],
                       inits)
    info = analyse(normalise(model))
    cut, side_inputs = tail_nodes(info, "image", "scores")
    assert side_inputs == []
    assert {"cast_a", "cast_b"} <= {layer.name for layer in cut}


# --- node names ---------------------------------------------------------------------------

def test_unnamed_and_duplicate_nodes_get_stable_documented_names(tmp_path):
    """Rule (spec/decisions.md): unnamed nodes become '<op_type lower-case>_<n>', counted per
    stem in graph order, skipping names the file already uses; a repeated name keeps its first
    use and later uses get '_<n>'."""
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="block", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu_2"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], name="block", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["scores"], name="conv_1"),
    ]
    inits = [weight("w1", 4, 3, 3, 3), weight("w2", 4, 4, 3, 3), weight("w3", 3, 4, 3, 3)]
    proto = graphs.model(nodes, [tensor("image", ["N", 3, 8, 8])], [tensor("scores", ["N", 3])],
                         inits)
    path = graphs.save(proto, tmp_path / "model.onnx")
    expected = ["conv_2", "relu_1", "block", "relu_2", "block_1", "relu_3",
                "globalaveragepool_1", "conv_1"]
    assert [n.name for n in load_model(path).graph.node] == expected
    assert [n.name for n in load_model(path).graph.node] == expected  # same every time

    model = dl.read_dl_model(path)
    summary = dl.get_dl_model_param(model, "summary")
    assert [line.split("; ")[1] for line in summary[1:]] == expected
    assert model.default_target_layer().name == "block_1"
    imgs = images(1, 8, 8)
    default = grad_cam_maps(model, imgs)
    np.testing.assert_array_equal(grad_cam_maps(model, imgs, {"target_conv_layer": "block_1"}),
                                  default)
    assert np.isfinite(grad_cam_maps(model, imgs, {"target_conv_layer": "conv_2"})).all()


# --- layouts --------------------------------------------------------------------------------

def test_nhwc_file_gives_the_heatmaps_of_the_same_network_in_nchw():
    nchw, nhwc = models.variant_cnn(), models.variant_cnn(layout="NHWC")
    a, b = dl.read_dl_model(nchw), dl.read_dl_model(nhwc)
    assert dl.get_dl_model_param_s(a, "input_layout") == "NCHW"
    assert dl.get_dl_model_param_s(b, "input_layout") == "NHWC"
    assert dl.get_dl_model_param(b, "image_dimensions") == [32, 32, 3]
    imgs = images(2, 32, 32)
    assert_apply_matches(b, imgs, probabilities_from_file(nhwc, imgs, "NHWC", "logits"))
    module = models.variant_module()
    np.testing.assert_allclose(grad_cam_maps(b, imgs), torch_grad_cam(module, imgs,
                                                                      module.conv3), atol=1e-4)
    np.testing.assert_allclose(guided_maps(b, imgs[:1]), guided_maps(a, imgs[:1]), atol=1e-6)


def tf2onnx_like(normalise_first: bool, perm=(0, 3, 1, 2), dims=("N", 16, 16, 3)):
    """NHWC input, optionally Sub/Div normalisation (Keras preprocessing) before the
    Transpose to NCHW, then a small CNN ending in Softmax."""
    nodes, inits = [], [weight("w", 4, 3, 3, 3)]
    x = "input_1:0"
    if normalise_first:
        nodes += [helper.make_node("Sub", [x, "mean"], ["centred"], name="sub"),
                  helper.make_node("Div", ["centred", "std"], ["scaled"], name="div")]
        inits += [numpy_helper.from_array(np.full(3, 0.5, np.float32), "mean"),
                  numpy_helper.from_array(np.full(3, 0.25, np.float32), "std")]
        x = "scaled"
    nodes += [helper.make_node("Transpose", [x], ["nchw"], name="transpose", perm=list(perm)),
              helper.make_node("Conv", ["nchw", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"], name="relu")]
    conv_head("r", 4, 3, nodes, inits)
    nodes.append(helper.make_node("Softmax", ["scores"], ["probs"], name="softmax", axis=-1))
    nodes[-2].output[0] = "scores"
    return graphs.model(nodes, [tensor("input_1:0", list(dims))], [tensor("probs", ["N", 3])],
                      inits, opset=13)


@pytest.mark.parametrize("normalise_first", [False, True], ids=["transpose-first",
                                                                  "normalise-then-transpose"])
def test_tf2onnx_like_nhwc_input_is_detected(tmp_path, normalise_first):
    path = graphs.save(tf2onnx_like(normalise_first), tmp_path / "model.onnx")
    model = dl.read_dl_model(path)
    assert dl.get_dl_model_param_s(model, "input_layout") == "NHWC"
    assert model.info.output_kind == "probabilities"
    imgs = images(2, 16, 16)
    assert_apply_matches(model, imgs, probabilities_from_file(path, imgs, "NHWC", "softmax"))
    assert grad_cam_maps(model, imgs).shape == (2, 16, 16)
    assert guided_maps(model, imgs[:1]).shape == (1, 16, 16, 3)


def test_summary_shapes_follow_each_tensors_layout_in_an_nhwc_graph(tmp_path):
    """Before the Transpose the tensors are N x H x W x C, after it N x C x H x W; 'summary'
    writes width x height x depth for both. The image is 16 wide and 12 high, with 3 channels;
    the convolution has 4 filters and the head 3 classes (tf2onnx_like)."""
    path = graphs.save(tf2onnx_like(True, dims=("N", 12, 16, 3)), tmp_path / "model.onnx")
    summary = dl.get_dl_model_param(dl.read_dl_model(path), "summary")
    shapes = {line.split("; ")[1]: line.split("; ")[3] for line in summary[1:]}
    assert shapes == {"sub": "16x12x3", "div": "16x12x3", "transpose": "16x12x3",
                      "conv": "16x12x4", "relu": "16x12x4", "pool": "1x1x4",
                      "flatten": "1x1x4", "fc": "1x1x3", "softmax": "1x1x3"}


def test_layout_detection_rules():
    # a Transpose that is not NHWC -> NCHW does not make the input NHWC
    swap = tf2onnx_like(False, perm=(0, 1, 3, 2), dims=("N", 3, 16, 16))
    assert analyse(normalise(swap)).image_input.layout == "NCHW"
    # without a Transpose, the channel-like last axis decides
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    for dims, layout in [(["N", 3, 32, 32], "NCHW"), (["N", 32, 32, 3], "NHWC"),
                         (["N", 1, 28, 28], "NCHW"), (["N", "h", "w", 1], "NHWC"),
                         (["N", 3, "h", "w"], "NCHW")]:
        model = graphs.model(nodes, [tensor("x", dims)], [tensor("y", None)],
                             [weight("w", 2, 3, 1, 1)])
        assert analyse(normalise(model)).image_input.layout == layout, dims


# --- batch and spatial sizes ----------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_symbolic_spatial_size_comes_from_image_width_and_height(layout):
    path = models.variant_cnn(spatial="symbolic", layout=layout)
    model = dl.read_dl_model(path)
    assert dl.get_dl_model_param(model, "image_dimensions") == [224, 224, 3]
    dl.set_dl_model_param(model, "image_width", 40)
    dl.set_dl_model_param(model, "image_height", 48)
    imgs = images(2, 48, 40)
    assert_apply_matches(model, imgs, probabilities_from_file(path, imgs, layout, "logits"))
    layer = model.default_target_layer()
    truth = zoo.deepest_conv(path, zoo.to_layout(imgs[:1], layout))
    assert layer.name == truth
    assert model.spatial_size(layer) == (12, 10)  # two 2x poolings: 48 / 4, 40 / 4
    summary = dl.get_dl_model_param(model, "summary")
    assert any(f"; {truth}; convolution; 10x12x16;" in line for line in summary)
    module = models.variant_module()
    np.testing.assert_allclose(grad_cam_maps(model, imgs),
                               torch_grad_cam(module, imgs, module.conv3), atol=1e-4)
    # a new size: shapes, heatmaps and cached modules follow
    dl.set_dl_model_param(model, "image_dimensions", [24, 36, 3])
    imgs = images(1, 36, 24)
    assert model.spatial_size(model.default_target_layer()) == (9, 6)
    np.testing.assert_allclose(grad_cam_maps(model, imgs),
                               torch_grad_cam(module, imgs, module.conv3), atol=1e-4)
    assert guided_maps(model, imgs).shape == (1, 36, 24, 3)


def test_fixed_batch_of_one():
    path = models.variant_cnn(batch="fixed")
    model = dl.read_dl_model(path)
    assert dl.get_dl_model_param_s(model, "batch_size") == 1
    with pytest.raises(HOperatorError) as error:
        dl.set_dl_model_param(model, "batch_size", 2)
    assert error.value.error_code == 7788
    imgs = images(3, 32, 32)
    assert_apply_matches(model, imgs, probabilities_from_file(path, imgs, "NCHW", "logits"))
    module = models.variant_module()
    np.testing.assert_allclose(grad_cam_maps(model, imgs),
                               torch_grad_cam(module, imgs, module.conv3), atol=1e-4)


# --- output kinds -------------------------------------------------------------------------

@pytest.mark.parametrize("output", ["flat", "4d"])
@pytest.mark.parametrize("head", models.VARIANT_HEADS)
def test_output_kinds(head, output):
    path = models.variant_cnn(head=head, output=output)
    model = dl.read_dl_model(path)
    assert dl.get_dl_model_param_s(model, "type") == "classification"
    assert dl.get_dl_model_param(model, "class_ids") == [0, 1, 2, 3]
    assert model.info.output_kind == {"logits": "logits", "softmax": "probabilities",
                                      "log_softmax": "log_probabilities"}[head]
    imgs = images(2, 32, 32)
    assert_apply_matches(model, imgs, probabilities_from_file(path, imgs, "NCHW", head))
    # the differentiated score is the logit before any final (Log)Softmax, so the maps are
    # those of the network without its head
    module = models.variant_module("logits", output)
    np.testing.assert_allclose(grad_cam_maps(model, imgs),
                               torch_grad_cam(module, imgs, module.conv3), atol=1e-4)
    assert np.isfinite(guided_maps(model, imgs[:1])).all()


def test_output_whose_dimensions_the_file_leaves_unknown(tmp_path):
    original = onnx.load(models.variant_cnn(output="4d"))
    for dim in original.graph.output[0].type.tensor_type.shape.dim:
        dim.Clear()
    path = graphs.save(original, tmp_path / "model.onnx")
    model = dl.read_dl_model(path)
    assert dl.get_dl_model_param_s(model, "type") == "classification"
    assert dl.get_dl_model_param(model, "class_ids") == [0, 1, 2, 3]


# --- opsets and exporters --------------------------------------------------------------------

@pytest.mark.parametrize(("opset", "dynamo"), zoo.SWEEP_OPSETS,
                         ids=[f"{'dynamo' if d else 'legacy'}-{o}" for o, d in zoo.SWEEP_OPSETS])
def test_grad_cam_at_every_opset_equals_torch(opset, dynamo):
    """The same network exported at every opset from 9 to 21 (legacy exporter up to 20, the
    dynamo exporter at 18 and 21) gives the torch module's Grad-CAM. (tests/zoo.py checks the
    same files' confidences, default layer and input gradients.)"""
    path = models.variant_cnn(head="softmax", opset=opset, dynamo=dynamo)
    assert zoo.file_opset(path) == opset
    model = dl.read_dl_model(path)
    imgs = images(2, 32, 32)
    module = models.variant_module("logits")
    np.testing.assert_allclose(grad_cam_maps(model, imgs),
                               torch_grad_cam(module, imgs, module.conv3), atol=1e-4)


# --- what cannot be converted ---------------------------------------------------------------

def test_unconvertible_op_fails_only_where_gradients_need_it():
    """conv1 -> Shrink (onnxruntime runs it, onnx2torch has no converter) -> conv2 -> head."""
    path = models.shrink_cnn()
    model = dl.read_dl_model(path)
    imgs = images(2, 8, 8)
    assert_apply_matches(model, imgs, probabilities_from_file(path, imgs, "NCHW", "logits"))
    # Grad-CAM at conv2 only needs the part after it: works
    assert model.default_target_layer().name == "conv2"
    assert np.isfinite(grad_cam_maps(model, imgs)).all()
    # through the Shrink: HALCON error 7801 naming the op and the node
    for call in (lambda: grad_cam_maps(model, imgs, {"target_conv_layer": "conv1"}),
                 lambda: guided_maps(model, imgs[:1])):
        with pytest.raises(HOperatorError) as error:
            call()
        assert error.value.error_code == 7801
        assert "gen_dl_model_heatmap" in str(error.value)
        assert "'Shrink'" in str(error.value) and "'odd_activation'" in str(error.value)


def test_converter_refusing_an_attribute_names_the_node(tmp_path):
    """AveragePool-19 with dilations: onnxruntime runs it (its gradient too, in the graph),
    the conversion to torch refuses it, naming the node."""
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["c1"], ["a"], name="dilated_pool", kernel_shape=[2, 2],
                         dilations=[2, 2]),
    ]
    inits = [weight("w1", 4, 3, 3, 3)]
    conv_head("a", 4, 3, nodes, inits)
    proto = graphs.model(nodes, [tensor("image", ["N", 3, 8, 8])], [tensor("scores", ["N", 3])],
                         inits, opset=19)
    path = graphs.save(proto, tmp_path / "model.onnx")
    model = dl.read_dl_model(path)
    imgs = images(1, 8, 8)
    assert_apply_matches(model, imgs, probabilities_from_file(path, imgs, "NCHW", "logits"))
    assert np.isfinite(grad_cam_maps(model, imgs)).all()  # the onnxruntime engine
    layer = model.info.by_name["conv1"].output
    with pytest.raises(HOperatorError) as error:
        gather_layer(model, imgs, dl.engine.Targets(), layer, model.params,
                                     engine="torch")
    assert error.value.error_code == 7801
    message = str(error.value)
    assert "'AveragePool'" in message and "'dilated_pool'" in message and "dilations" in message


def test_graph_onnxruntime_cannot_load_fails_at_read_time(tmp_path):
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Frobnicate", ["c"], ["f"], name="mystery_node",
                              domain="com.example")]
    inits = [weight("w", 4, 3, 3, 3)]
    conv_head("f", 4, 3, nodes, inits)
    model = graphs.model(nodes, [tensor("image", ["N", 3, 8, 8])], [tensor("scores", ["N", 3])],
                       inits, domains=[helper.make_opsetid("com.example", 1)])
    with pytest.raises(HOperatorError) as error:
        dl.read_dl_model(graphs.save(model, tmp_path / "model.onnx"))
    assert error.value.error_code == 7801
    message = str(error.value)
    assert "read_dl_model" in message
    assert "Frobnicate" in message and "mystery_node" in message


def failing_reshape_cnn(path: Path) -> Path:
    """conv1 -> Reshape to [N, 4, 7] (node 'bad_reshape') -> ReduceMean -> scores [N, 4]:
    valid ONNX that cannot run, as conv1 gives 6 x H x W values per image, not 28. Height and
    width are symbolic in the file, so nothing finds out before the graph runs."""
    inits = graphs.two_conv_weights(seed=7, conv1_scale=0.3)
    inits["target_shape"] = np.array([0, graphs.TWO_CONV_CLASSES, 7], np.int64)
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c1", "target_shape"], ["r"], name="bad_reshape"),
        helper.make_node("ReduceMean", ["r"], ["scores"], name="mean", axes=[2], keepdims=0),
    ]
    used = {k: v for k, v in inits.items() if k in ("w1", "b1", "target_shape")}
    return graphs.two_conv_classifier(nodes, used, path, spatial=("H", "W"))


@pytest.mark.parametrize("method", ["grad_cam", "guided_grad_cam"])
def test_graph_failing_while_it_runs_names_the_node(tmp_path, rng, method):
    """guided_grad_cam runs the graph in torch only, grad_cam in onnxruntime first: either
    way the 7801 message names the node that failed."""
    model = dl.read_dl_model(failing_reshape_cnn(tmp_path / "bad_reshape.onnx"))
    dl.set_dl_model_param(model, "image_height", 8)
    dl.set_dl_model_param(model, "image_width", 8)
    image = random_images(rng, 1, 8, 8, 3)[0]
    with pytest.raises(dl.HOperatorError) as error:
        dl.gen_dl_model_heatmap(model, {"image": image}, method, [], None)
    assert error.value.error_code == 7801
    message = str(error.value)
    assert "gen_dl_model_heatmap" in message and "'bad_reshape'" in message, message
    assert "Reshape" in message  # the op: onnxruntime names it, torch its module OnnxReshape
# --- op versions onnx2torch 1.5 lacks --------------------------------------------------------

def _one_op(op: str, opset: int, attrs: dict, extra_inputs, outputs: int) -> onnx.ModelProto:
    """x [2, 4, 6, 6] -> one ``op`` node; ``extra_inputs`` are (name, array) initializers,
    ("", None) for an omitted optional input."""
    inits = [numpy_helper.from_array(np.asarray(v), name) for name, v in extra_inputs if name]
    outs = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op, ["x", *[name for name, _ in extra_inputs]], outs,
                            name=f"{op.lower()}_node", **attrs)
    return graphs.model([node], [tensor("x", [2, 4, 6, 6])],
                      [helper.make_empty_tensor_value_info(o) for o in outs], inits, opset=opset)


OP_VERSIONS = {
    "ReduceMean-18": ("ReduceMean", 18, {"keepdims": 1},
                      [("axes", np.array([2, 3], np.int64))]),
    "ReduceMax-20": ("ReduceMax", 20, {"keepdims": 0}, [("axes", np.array([1], np.int64))]),
    "ReduceSumSquare-18-all": ("ReduceSumSquare", 18, {}, []),
    "AveragePool-19": ("AveragePool", 19, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                           "strides": [2, 2], "count_include_pad": 1}, []),
    "Pad-19": ("Pad", 19, {"mode": "reflect"},
               [("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))]),
    "Split-18": ("Split", 18, {"axis": 1, "num_outputs": 2}, []),
    "Gelu-20": ("Gelu", 20, {}, []),
    "Gelu-20-tanh": ("Gelu", 20, {"approximate": "tanh"}, []),
    "Reshape-21-allowzero": ("Reshape", 21, {"allowzero": 1},
                             [("shape", np.array([2, -1], np.int64))]),
    "Flatten-21": ("Flatten", 21, {"axis": 2}, []),
    "Transpose-21": ("Transpose", 21, {"perm": [0, 2, 3, 1]}, []),
    "Unsqueeze-21": ("Unsqueeze", 21, {}, [("axes", np.array([1], np.int64))]),
    "Cast-19": ("Cast", 19, {"to": TensorProto.DOUBLE}, []),
    "Resize-19": ("Resize", 19, {"mode": "linear"},
                  [("", None), ("scales", np.array([1, 1, 2, 2], np.float32))]),
    "Slice-1-opset9": ("Slice", 9, {"starts": [1, -4], "ends": [5, 1000], "axes": [2, 3]}, []),
    "Slice-1-opset9-no-axes": ("Slice", 9, {"starts": [0, 1], "ends": [2, -1]}, []),
    "GlobalMaxPool-1": ("GlobalMaxPool", 13, {}, []),
    "Mish-18": ("Mish", 18, {}, []),
}


@pytest.mark.parametrize("key", list(OP_VERSIONS))
def test_op_versions_convert_like_onnxruntime(key):
    from dlheatmap.runtime.torch_backend import convert

    op, opset, attrs, extra = OP_VERSIONS[key]
    model = _one_op(op, opset, attrs, extra, outputs=2 if op == "Split" else 1)
    x = np.random.default_rng(1).normal(size=(2, 4, 6, 6)).astype(np.float32)
    expected = session(model).run(None, {"x": x})
    module = convert(normalise(model), "test")
    got = module(torch.from_numpy(x))
    got = got if isinstance(got, (tuple, list)) else [got]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g.detach().numpy(), e, rtol=1e-5, atol=1e-5)

