"""Each seed system's heatmap, reproduced by dlheatmap on the same model.

The seeds are Keras code; each test writes the seed's algorithm out again in plain torch (or
numpy on gradients from plain torch autograd) on the torch module that was exported to ONNX,
one image at a time as the seeds run, and asserts that dlheatmap's output for the ONNX file
matches: formula, score, normalisation and, for the Keras tutorial, the jet overlay.

- AUCMEDI Grad-CAM: gradient of the model's output (softmax probabilities) at the last 4-D
  layer, channel weights = its spatial mean, map = weighted channel sum, no ReLU, min-max
  normalised with 1e-8 added to the range; layer resolution.
- AUCMEDI saliency: gradient of the output probability w.r.t. the input, plain maximum over
  the channels, min-max normalised with 1e-8.
- eli5 Keras Grad-CAM: gradient of the output, L2-normalised over the whole gradient tensor
  (Keras l2_normalize: norm floored at sqrt(1e-12)), spatial mean, weighted sum, ReLU, divided
  by (maximum + 1e-7).
- Keras tutorial: gradient of the logit (softmax removed), spatial mean, weighted sum, ReLU
  divided by the maximum; overlay: 8-bit levels, jet colours, scaled to 0..255, resized to
  the image (PIL, bicubic), alpha 0.4 added to the 0..255 image, scaled to 0..255 again.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dlheatmap as dl
from dlheatmap.methods import GradCAM, Saliency, jet_overlay
from tests import models
from tests.reference import nchw

RELU = "/8/Relu"  # the last 4-D layer: the ReLU after the last convolution (module[8])


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(11)
    return rng.uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)


def exported(softmax: bool):
    """The torch module and its ONNX export, checked to compute the same function."""
    module, path = models.exported_cnn(softmax=softmax)
    probe = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    output = dl.apply_dl_model(dl.read_dl_model(path), [{"image": p} for p in probe], [])
    with torch.no_grad():
        expected = module(nchw(probe))
    if not softmax:
        expected = torch.softmax(expected, dim=1)
    for result, row in zip(output, expected.numpy(), strict=True):
        confidences = dict(zip(result["classification_class_ids"],
                               result["classification_confidences"], strict=True))
        np.testing.assert_allclose([confidences[i] for i in range(4)], row, atol=1e-5)
    return module, path


def conv_output_and_grads(module, image, class_index=None):
    """One image: the last 4-D layer's output (channels last, as Keras) and d output[class] /
    d layer; the class is the top one when not given."""
    store = {}
    hook = module[8].register_forward_hook(lambda m, i, out: store.setdefault("a", out))
    try:
        preds = module(nchw(image[None]))
    finally:
        hook.remove()
    if class_index is None:
        class_index = int(preds.argmax())
    (grads,) = torch.autograd.grad(preds[:, class_index].sum(), store["a"])
    to_hwc = lambda t: t.detach()[0].permute(1, 2, 0).numpy().astype(np.float64)  # noqa: E731
    return to_hwc(store["a"]), to_hwc(grads), class_index


def test_aucmedi_grad_cam(images):
    module, path = exported(softmax=True)
    expected = []
    for image, class_index in zip(images, [2, 0, 0], strict=True):
        conv_out, grads, _ = conv_output_and_grads(module, image, class_index)
        pooled = grads.mean(axis=(0, 1))
        heatmap = conv_out @ pooled
        expected.append((heatmap - heatmap.min()) / (heatmap.max() - heatmap.min() + 1e-8))
    result = dl.explain(path, images, "grad_cam", targets=[2, 0, 0], layer=RELU,
                        score="probability", normalize="minmax", eps=1e-8, upsample=False)
    np.testing.assert_allclose(result.heatmaps[:, 0], np.stack(expected), atol=2e-5)


def test_aucmedi_saliency(images):
    module, path = exported(softmax=True)
    expected = []
    for image, class_index in zip(images, [1, 3, 0], strict=True):
        x = nchw(image[None]).requires_grad_(True)
        loss = module(x)[:, class_index].sum()
        (gradient,) = torch.autograd.grad(loss, x)
        heatmap = gradient[0].permute(1, 2, 0).numpy().astype(np.float64).max(axis=-1)
        expected.append((heatmap - heatmap.min()) / (heatmap.max() - heatmap.min() + 1e-8))
    result = dl.explain(path, images, Saliency(reduce="max"), targets=[1, 3, 0],
                        score="probability", normalize="minmax", eps=1e-8)
    np.testing.assert_allclose(result.heatmaps[:, 0], np.stack(expected), atol=2e-5)


@pytest.mark.parametrize("softmax", [False, True], ids=["scores", "probabilities"])
def test_eli5_grad_cam(images, softmax):
    """eli5 differentiates the model's output, whatever it is: logits for a model without a
    final softmax (dlheatmap's score 'logit'), probabilities for one with it ('probability')."""
    module, path = exported(softmax=softmax)
    expected = []
    for image in images:
        activations, grads, _ = conv_output_and_grads(module, image)  # eli5: top class
        grads = grads / np.sqrt(max(np.sum(grads**2), 1e-12))
        weights = grads.mean(axis=(0, 1))
        lmap = np.zeros(activations.shape[:2])
        for i, w in enumerate(weights):
            lmap += w * activations[..., i]
        lmap = np.maximum(lmap, 0)
        expected.append(lmap / (lmap.max() + 1e-7))
    result = dl.explain(path, images, GradCAM(l2_gradients=True), layer=RELU,
                        score="probability" if softmax else "logit", normalize="max",
                        eps=1e-7, upsample=False)
    np.testing.assert_allclose(result.heatmaps[:, 0], np.stack(expected), atol=2e-5)


def keras_array_to_img(array: np.ndarray):
    """Keras' array_to_img with its default scale=True: shift to 0, divide by the maximum,
    times 255, cast to uint8, as an RGB PIL image."""
    from PIL import Image

    x = array.astype(np.float64) - array.min()
    if x.max() != 0:
        x = x / x.max()
    return Image.fromarray((x * 255).astype("uint8"), "RGB")


def jet_colours():
    """The tutorial's colours: matplotlib's jet at 256 levels."""
    import matplotlib

    return matplotlib.colormaps["jet"](np.arange(256))[:, :3]


def test_keras_tutorial_grad_cam_and_overlay(images):
    module, path = exported(softmax=False)  # the tutorial removes the final softmax
    originals = images * 255  # the image as loaded (0..255); the model sees it / 255
    heatmaps, overlays = [], []
    for image, original in zip(images, originals, strict=True):
        last_conv_layer_output, grads, _ = conv_output_and_grads(module, image)
        pooled_grads = grads.mean(axis=(0, 1))
        heatmap = last_conv_layer_output @ pooled_grads
        heatmap = np.maximum(heatmap, 0) / heatmap.max()
        heatmaps.append(heatmap)
        levels = np.uint8(255 * heatmap)
        jet_heatmap = keras_array_to_img(jet_colours()[levels])
        jet_heatmap = jet_heatmap.resize((original.shape[1], original.shape[0]))
        superimposed = np.asarray(jet_heatmap, np.float32) * 0.4 + original
        overlays.append(np.asarray(keras_array_to_img(superimposed)))
    result = dl.explain(path, images, "grad_cam", layer=RELU, normalize="max", upsample=False)
    np.testing.assert_allclose(result.heatmaps[:, 0], np.stack(heatmaps), atol=2e-5)
    for heat, original, expected in zip(result.heatmaps[:, 0], originals, overlays,
                                        strict=True):
        ours = jet_overlay(original, heat, alpha=0.4)
        assert ours.dtype == np.uint8 and ours.shape == (32, 32, 3)
        difference = np.abs(ours.astype(int) - expected.astype(int))
        # 8-bit quantisation of a map equal to 2e-5 can move a level by one
        assert difference.max() <= 1 and difference.mean() < 0.01


def test_jet_matches_matplotlib():
    """dlheatmap's own jet definition equals matplotlib's 256-entry table."""
    np.testing.assert_allclose(dl.methods.overlay.jet_lut(), jet_colours(), atol=1e-7)
