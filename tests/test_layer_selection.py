"""Which layer a heatmap is taken at: use_conv_only 'false' takes the activation fused to the
convolution (a ReLU, past a BatchNormalization, or a Clip), 'true' the convolution itself.

Truths used: captum's LayerGradCam on the graph converted by onnx2torch directly (ResNet-18),
and Grad-CAM written out in torch on the same weights for hand-built graphs (torch's exporters
fold every BatchNormalization that follows a convolution, so exported models never have one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper
from torch.nn import functional as F

import dlheatmap as dl
from tests import graphs, models
from tests.conftest import random_images
from tests.reference import captum_layer_map, f64


def test_use_conv_only_false_takes_the_fused_relu(rng):
    path = models.torchvision_model("resnet18", size=64, num_classes=6)
    model = dl.read_dl_model(path)
    conv = model.info.by_name["/layer4/layer4.1/conv1/Conv"]
    relu = model.info.fused_activation(conv)
    assert relu is not None and relu.op_type == "Relu"
    images = random_images(rng, 1, 64, 64, 3)
    core = dl.heatmap.grad_cam(model, images, layer=conv, use_conv_only=False)
    assert core.tensor == relu.output
    reference = captum_layer_map(path, images, relu.output, core.targets)
    np.testing.assert_allclose(core.layer_maps, reference, atol=1e-4 * np.abs(reference).max())
    # the last convolution of a block is followed by an Add, not a ReLU: the conv itself
    last = model.default_target_layer()
    assert model.info.fused_activation(last) is None
    assert dl.heatmap.grad_cam(model, images, layer=last, use_conv_only=False).tensor == \
        last.output


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
    inits = graphs.two_conv_weights(seed=5, conv1_scale=0.8)
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
        nodes.append(graphs.clip("act1", source, "a1", 6.0, 17, inits))
    nodes += graphs.two_conv_head("a1")
    return graphs.two_conv_classifier(nodes, inits, path), weights


def torch_fused_grad_cam(w: dict, images: np.ndarray, target: int, activation: str,
                         batchnorm: bool) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM at the activation's output, in torch on the same weights: A the activation,
    G = d logit_target / d A by autograd from A on; map = sum_c mean_hw(G_c) A_c.
    Returns (map at the activation, map at conv1's own output)."""
    x = f64(images.transpose(0, 3, 1, 2))
    z1 = F.conv2d(x, f64(w["w1"]), f64(w["b1"]), padding=1)
    maps = []
    for layer in ("activation", "conv"):
        y = z1
        if layer == "conv":
            y = y.detach().requires_grad_(True)
            leaf = y
        if batchnorm:
            y = F.batch_norm(y, f64(w["bn_mean"]), f64(w["bn_var"]), f64(w["bn_scale"]),
                             f64(w["bn_bias"]), training=False, eps=EPSILON)
        y = y.clamp(min=0.0) if activation == "relu" else y.clamp(0.0, 6.0)
        if layer == "activation":
            y = y.detach().requires_grad_(True)
            leaf = y
        z2 = F.conv2d(y, f64(w["w2"]), f64(w["b2"]), padding=1)
        logits = z2.clamp(min=0.0).mean((2, 3)) @ f64(w["fc_w"]).T + f64(w["fc_b"])
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
