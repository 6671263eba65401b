"""Hand-built ONNX graphs for what exported models never contain.

torch's exporters fold every BatchNormalization that follows a convolution, and onnx2torch
turns Clip(0, 6) into nn.ReLU6, so the exported test models never exercise:

- guided backpropagation through a Clip(0, x) with x != 6 (onnx2torch's OnnxClip);
- use_conv_only 'false' through a BatchNormalization, or onto a Clip;
- a converted graph that fails while it runs (7801 naming the node).

The graphs are written here with onnx.helper; the truths are written out by hand in torch
(explicit masks, explicit backward formulas) or computed by torch on the same weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch.nn import functional as F

import dlheatmap as dl
from tests.conftest import random_images
from tests.engines import gather_whole

CLASSES = 4


def _save(nodes, inits: dict[str, np.ndarray], path: Path, opset: int = 17,
          spatial=(8, 8)) -> Path:
    """image [N, 3, H, W] -> ``nodes`` -> scores [N, CLASSES]."""
    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, *spatial])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", CLASSES])],
        [numpy_helper.from_array(_stored(value), name) for name, value in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset >= 9 else 3
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _stored(value) -> np.ndarray:
    value = np.asarray(value)
    return value.astype(np.float32) if value.dtype.kind == "f" else value


def _clip(name: str, source: str, output: str, upper: float, opset: int, inits: dict):
    """Clip(0, upper): bounds as attributes before opset 11, as initializer inputs after."""
    if opset < 11:
        return helper.make_node("Clip", [source], [output], name=name, min=0.0, max=upper)
    inits[f"{name}_min"] = np.array(0.0, np.float32)
    inits[f"{name}_max"] = np.array(upper, np.float32)
    return helper.make_node("Clip", [source, f"{name}_min", f"{name}_max"], [output], name=name)


def _weights(seed: int, conv1_scale: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.normal(0, conv1_scale, (6, 3, 3, 3)), "b1": rng.normal(0, 0.1, 6),
        "w2": rng.normal(0, 0.3, (5, 6, 3, 3)), "b2": rng.normal(0, 0.1, 5),
        "fc_w": rng.normal(0, 1.0, (CLASSES, 5)), "fc_b": rng.normal(0, 0.1, CLASSES),
    }


def _head(source: str) -> list:
    """``source`` -> conv2 -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> scores."""
    return [
        helper.make_node("Conv", [source, "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["scores"], name="fc", transB=1),
    ]


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, np.float64))


def _nchw(images: np.ndarray) -> torch.Tensor:
    return _t(images.transpose(0, 3, 1, 2))


# --- guided backpropagation through Clip(0, 0.7) --------------------------------------------

UPPER = 0.7


def clip_cnn(path: Path, opset: int) -> tuple[Path, dict[str, np.ndarray]]:
    """Conv -> Clip(0, 0.7) -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm."""
    inits = _weights(seed=3, conv1_scale=0.15)
    weights = dict(inits)
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1",
                              pads=[1, 1, 1, 1]),
             _clip("clip", "c1", "a1", UPPER, opset, inits),
             *_head("a1")]
    return _save(nodes, inits, path, opset), weights


def hand_guided_backprop(w: dict, images: np.ndarray, target: int, clip_rule: str):
    """d logit_target / d image by hand (float64), guided at both activations: the gradient
    passes where the activation's input is inside its linear range (0 < x < 0.7 at the Clip,
    x > 0 at the Relu) and the gradient arriving from above is positive.

    ``clip_rule`` 'guided' is that rule; 'relu' guides the Clip as an unbounded ReLU (mask
    x > 0); 'plain' does not guide it (no sign condition): wrong variants the test tells
    apart. Returns (input gradients N x H x W x C, logits, conv1's output).
    """
    x = _nchw(images)
    z1 = F.conv2d(x, _t(w["w1"]), _t(w["b1"]), padding=1)
    a1 = z1.clamp(0.0, UPPER)
    z2 = F.conv2d(a1, _t(w["w2"]), _t(w["b2"]), padding=1)
    a2 = z2.clamp(min=0.0)
    logits = a2.mean((2, 3)) @ _t(w["fc_w"]).T + _t(w["fc_b"])
    # backward, written out
    height, width = a2.shape[2:]
    g_pool = _t(w["fc_w"])[target].expand(len(x), -1)  # d logit / d pooled
    g_a2 = (g_pool / (height * width))[:, :, None, None].expand_as(a2)
    g_z2 = g_a2 * (z2 > 0) * (g_a2 > 0)
    g_a1 = torch.nn.grad.conv2d_input(a1.shape, _t(w["w2"]), g_z2, padding=1)
    inside = (z1 > 0) & (z1 < UPPER) if clip_rule != "relu" else z1 > 0
    g_z1 = g_a1 * inside * ((g_a1 > 0) if clip_rule != "plain" else 1)
    g_x = torch.nn.grad.conv2d_input(x.shape, _t(w["w1"]), g_z1, padding=1)
    return g_x.numpy().transpose(0, 2, 3, 1), logits.numpy(), z1.numpy()


@pytest.mark.parametrize("opset", [10, 17])  # Clip-6 (attributes) and Clip-13 (inputs)
def test_guided_backprop_through_clip_with_upper_bound_0_7(tmp_path, rng, opset):
    path, w = clip_cnn(tmp_path / "clip_cnn.onnx", opset)
    model = dl.read_dl_model(path)
    images = random_images(rng, 3, 8, 8, 3)
    target = 2
    passed = gather_whole(
        model, images, dl.heatmap.fixed_class(target), None, model.params)
    expected, logits, z1 = hand_guided_backprop(w, images, target, "guided")

    # the graph exercises the bound: many inputs of the Clip lie above 0.7, many inside
    assert (z1 >= UPPER).mean() > 0.1 and ((z1 > 0) & (z1 < UPPER)).mean() > 0.2
    # the torch forward keeps the bound (its probabilities are the hand-written logits')
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(passed.probabilities, shifted / shifted.sum(1, keepdims=True),
                               atol=1e-6)
    peak = np.abs(expected).max()
    assert peak > 0
    np.testing.assert_allclose(passed.input_gradients[0], expected, atol=1e-5 * peak, rtol=0)
    # and the test can fail: guiding the Clip as a plain ReLU, or not at all, is another image
    for wrong in ("relu", "plain"):
        other, _, _ = hand_guided_backprop(w, images, target, wrong)
        assert np.abs(other - expected).max() > 1e-2 * peak, wrong


# --- use_conv_only 'false' through a BatchNormalization and onto a Clip ---------------------

FUSED = {
    # name: (activation after conv1, with a BatchNormalization in between)
    "bn-relu": ("relu", True),
    "clip6": ("clip6", False),
    "bn-clip6": ("clip6", True),
}
EPSILON = 1e-3


def fused_cnn(path: Path, activation: str, batchnorm: bool):
    """conv1 [-> BatchNormalization] -> Relu or Clip(0, 6) -> conv2 -> Relu -> head.

    conv1 outputs about 3.6 in standard deviation, so Clip(0, 6) also cuts some (~5%) at 6.
    """
    inits = _weights(seed=5, conv1_scale=0.8)
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1",
                              pads=[1, 1, 1, 1])]
    source = "c1"
    if batchnorm:
        inits.update(bn_scale=rng.uniform(0.5, 1.5, 6), bn_bias=rng.normal(0, 0.5, 6),
                     bn_mean=rng.normal(0, 0.5, 6), bn_var=rng.uniform(0.5, 2.0, 6))
        nodes.append(helper.make_node(
            "BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"],
            name="bn1", epsilon=EPSILON))
        source = "bn"
    weights = dict(inits)
    if activation == "relu":
        nodes.append(helper.make_node("Relu", [source], ["a1"], name="act1"))
    else:
        nodes.append(_clip("act1", source, "a1", 6.0, 17, inits))
    nodes += _head("a1")
    return _save(nodes, inits, path), weights


def torch_fused_grad_cam(w: dict, images: np.ndarray, target: int, activation: str,
                         batchnorm: bool) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM at the activation's output, in torch on the same weights: A the activation,
    G = d logit_target / d A by autograd from A on; map = sum_c mean_hw(G_c) A_c.
    Returns (map at the activation, map at conv1's own output)."""
    x = _nchw(images)
    z1 = F.conv2d(x, _t(w["w1"]), _t(w["b1"]), padding=1)
    maps = []
    for layer in ("activation", "conv"):
        y = z1
        if layer == "conv":
            y = y.detach().requires_grad_(True)
            leaf = y
        if batchnorm:
            y = F.batch_norm(y, _t(w["bn_mean"]), _t(w["bn_var"]), _t(w["bn_scale"]),
                             _t(w["bn_bias"]), training=False, eps=EPSILON)
        y = y.clamp(min=0.0) if activation == "relu" else y.clamp(0.0, 6.0)
        if layer == "activation":
            y = y.detach().requires_grad_(True)
            leaf = y
        z2 = F.conv2d(y, _t(w["w2"]), _t(w["b2"]), padding=1)
        logits = z2.clamp(min=0.0).mean((2, 3)) @ _t(w["fc_w"]).T + _t(w["fc_b"])
        (grad,) = torch.autograd.grad(logits[:, target].sum(), leaf)
        maps.append((grad.mean((2, 3), keepdim=True) * leaf).sum(1).detach().numpy())
    return maps[0], maps[1]


@pytest.mark.parametrize("name", list(FUSED))
def test_use_conv_only_false_takes_the_activation_after_batchnorm_or_clip(tmp_path, rng, name):
    activation, batchnorm = FUSED[name]
    path, w = fused_cnn(tmp_path / f"{name}.onnx", activation, batchnorm)
    model = dl.read_dl_model(path)
    conv = model.info.by_name["conv1"]
    fused = model.info.fused_activation(conv)
    assert fused is not None and fused.name == "act1"
    assert fused.op_type == ("Relu" if activation == "relu" else "Clip")

    images = random_images(rng, 2, 8, 8, 3)
    target = 1
    choose = dl.heatmap.fixed_class(target)
    core = dl.heatmap.grad_cam(model, images, choose, layer=conv, use_conv_only=False)
    assert core.tensor == "a1"  # the activation's output, past the BatchNormalization
    expected, at_conv = torch_fused_grad_cam(w, images, target, activation, batchnorm)
    peak = np.abs(expected).max()
    assert peak > 0
    np.testing.assert_allclose(core.layer_maps, expected, atol=1e-5 * peak, rtol=0)
    # the choice matters: the map at the convolution itself is another one
    assert np.abs(at_conv - expected).max() > 1e-2 * peak
    plain = dl.heatmap.grad_cam(model, images, choose, layer=conv, use_conv_only=True)
    assert plain.tensor == "c1"
    np.testing.assert_allclose(plain.layer_maps, at_conv, atol=1e-5 * np.abs(at_conv).max())

    # through the operator: the layer keeps the image size (3 x 3, padding 1), so the
    # heatmap is the map itself with negatives set to 0, divided by its maximum
    results = dl.gen_dl_model_heatmap(model, [{"image": i} for i in images], "grad_cam",
                                      [target], {"target_conv_layer": "conv1",
                                                 "use_conv_only": "false"})
    for result, layer_map in zip(results, expected, strict=True):
        heat = result["heatmap_grad_cam"][f"heatmap_image_class_{target}"]
        positive = np.maximum(layer_map, 0)
        np.testing.assert_allclose(heat, positive / positive.max(), atol=1e-5)


# --- a converted graph that fails while it runs -----------------------------------------------

def failing_reshape_cnn(path: Path) -> Path:
    """conv1 -> Reshape to [N, 4, 7] (node 'bad_reshape') -> ReduceMean -> scores [N, 4]:
    valid ONNX that cannot run, as conv1 gives 6 x H x W values per image, not 28. Height and
    width are symbolic in the file, so nothing finds out before the graph runs."""
    inits = _weights(seed=7, conv1_scale=0.3)
    inits["target_shape"] = np.array([0, CLASSES, 7], np.int64)
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c1", "target_shape"], ["r"], name="bad_reshape"),
        helper.make_node("ReduceMean", ["r"], ["scores"], name="mean", axes=[2], keepdims=0),
    ]
    return _save(nodes, {k: v for k, v in inits.items() if k in ("w1", "b1", "target_shape")},
                 path, spatial=("H", "W"))


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
