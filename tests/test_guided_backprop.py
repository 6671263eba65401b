"""Guided backpropagation and Guided Grad-CAM against independent truths.

Truths used: captum's GuidedBackprop and LayerGradCam on the graph converted to torch by
onnx2torch directly (not through dlheatmap); backward hooks on that module's ReLU6 layers; and,
for a hand-built Clip(0, 0.7) that exported models never contain (onnx2torch turns Clip(0, 6)
into nn.ReLU6), the backward pass written out by hand in torch (explicit masks, float64).
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
from tests.engines import gather_whole
from tests.reference import (
    bilinear_resize,
    captum_guided_backprop,
    captum_layer_map,
    converted_module,
    f64,
    nchw,
)

# --- exported models: captum and backward hooks ----------------------------------------------

@pytest.mark.parametrize("name", ["resnet18", "densenet121", "mobilenet_v3_small"])
def test_guided_backprop_matches_captum(rng, name):
    """captum's GuidedBackprop guides the nn.ReLU modules of the directly converted graph.

    ResNet-18 and DenseNet-121 have only ReLUs (DenseNet's pre-activation BatchNorms stay
    in the graph); MobileNet v3 has ReLUs and HardSwish / HardSigmoid, which neither guides.
    The zoo's 32-pixel exports (4 classes) are reused: small, and cached on disk anyway.
    """
    path = models.torchvision_model(name, size=32, num_classes=4)
    model = dl.read_dl_model(path)
    images = random_images(rng, 2, 32, 32, 3)
    target = 3
    passed = gather_whole(
        model, images, dl.heatmap.fixed_class(target), None, model.params)
    module = converted_module(path)
    assert sum(isinstance(child, torch.nn.ReLU) for child in module.modules()) >= 3
    theirs = captum_guided_backprop(module, images, target)
    peak = np.abs(theirs).max()
    assert peak > 0
    np.testing.assert_allclose(passed.input_gradients[0], theirs, atol=1e-5 * peak, rtol=0)
    # the guiding matters here: the plain gradient is another image
    plain = gather_whole(
        model, images, dl.heatmap.fixed_class(target), None, model.params, guided=False)
    assert np.abs(plain.input_gradients[0] - theirs).max() > 1e-2 * peak


def test_guided_grad_cam_is_guided_backprop_times_cam(rng):
    path = models.torchvision_model("resnet18", size=64, num_classes=6)
    model = dl.read_dl_model(path)
    images = random_images(rng, 2, 64, 64, 3)
    results = dl.gen_dl_model_heatmap(model, [{"image": i} for i in images],
                                      "guided_grad_cam", 3, None)
    guided = captum_guided_backprop(converted_module(path), images, 3)
    layer = model.default_target_layer()
    cam = bilinear_resize(captum_layer_map(path, images, layer.output, np.array([3, 3])), 64, 64)
    expected = guided * np.maximum(cam, 0)[..., None]
    for result, exp, image in zip(results, expected, images, strict=True):
        out = result["heatmap_guided_grad_cam"]["guided_grad_cam_image_class_3"]
        assert out.dtype == np.float32 and out.shape == image.shape
        np.testing.assert_allclose(out, exp, atol=1e-4 * np.abs(exp).max() + 1e-12)


def test_guided_backprop_through_relu6(rng):
    """ReLU6 (Clip(0, 6)) is guided too: compared with backward hooks on the directly
    converted module's ReLU6 layers, which pass only positive gradients."""
    path = models.torchvision_model("mobilenet_v2", size=64, num_classes=6)
    model = dl.read_dl_model(path)
    images = random_images(rng, 2, 64, 64, 3)
    passed = gather_whole(
        model, images, dl.heatmap.fixed_class(2), None, model.params)

    module = converted_module(path)
    hooked = 0
    for child in module.modules():
        if isinstance(child, (torch.nn.ReLU, torch.nn.ReLU6)):
            child.register_full_backward_hook(lambda m, g_in, g_out: (g_in[0].clamp(min=0),))
            hooked += 1
    assert hooked >= 30  # MobileNetV2 has 35 ReLU6
    x = nchw(images).requires_grad_(True)
    module(x)[:, 2].sum().backward()
    theirs = x.grad.numpy().transpose(0, 2, 3, 1)
    peak = np.abs(theirs).max()
    assert peak > 0
    np.testing.assert_allclose(passed.input_gradients[0], theirs, atol=1e-5 * peak, rtol=0)
# --- guided backpropagation through Clip(0, 0.7) --------------------------------------------

UPPER = 0.7


def clip_cnn(path: Path, opset: int) -> tuple[Path, dict[str, np.ndarray]]:
    """Conv -> Clip(0, 0.7) -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm."""
    inits = graphs.two_conv_weights(seed=3, conv1_scale=0.15)
    weights = dict(inits)
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1",
                              pads=[1, 1, 1, 1]),
             graphs.clip("clip", "c1", "a1", UPPER, opset, inits),
             *graphs.two_conv_head("a1")]
    return graphs.two_conv_classifier(nodes, inits, path, opset), weights


def hand_guided_backprop(w: dict, images: np.ndarray, target: int, clip_rule: str):
    """d logit_target / d image by hand (float64), guided at both activations: the gradient
    passes where the activation's input is inside its linear range (0 < x < 0.7 at the Clip,
    x > 0 at the Relu) and the gradient arriving from above is positive.

    ``clip_rule`` 'guided' is that rule; 'relu' guides the Clip as an unbounded ReLU (mask
    x > 0); 'plain' does not guide it (no sign condition): wrong variants the test tells
    apart. Returns (input gradients N x H x W x C, logits, conv1's output).
    """
    x = f64(images.transpose(0, 3, 1, 2))
    z1 = F.conv2d(x, f64(w["w1"]), f64(w["b1"]), padding=1)
    a1 = z1.clamp(0.0, UPPER)
    z2 = F.conv2d(a1, f64(w["w2"]), f64(w["b2"]), padding=1)
    a2 = z2.clamp(min=0.0)
    logits = a2.mean((2, 3)) @ f64(w["fc_w"]).T + f64(w["fc_b"])
    # backward, written out
    height, width = a2.shape[2:]
    g_pool = f64(w["fc_w"])[target].expand(len(x), -1)  # d logit / d pooled
    g_a2 = (g_pool / (height * width))[:, :, None, None].expand_as(a2)
    g_z2 = g_a2 * (z2 > 0) * (g_a2 > 0)
    g_a1 = torch.nn.grad.conv2d_input(a1.shape, f64(w["w2"]), g_z2, padding=1)
    inside = (z1 > 0) & (z1 < UPPER) if clip_rule != "relu" else z1 > 0
    g_z1 = g_a1 * inside * ((g_a1 > 0) if clip_rule != "plain" else 1)
    g_x = torch.nn.grad.conv2d_input(x.shape, f64(w["w1"]), g_z1, padding=1)
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
