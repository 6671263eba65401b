"""Faithfulness metrics against hand computations, properties and pytorch-grad-cam.

Truths used: a linear ONNX classifier built here (logits = image . W), whose deletion and
insertion curves are computed by hand in numpy; the trapezoidal rule written out; scipy's
Gaussian filter for the blur baseline; pytorch-grad-cam's DropInConfidence and
IncreaseInConfidence on the torch module that was exported; hand-made pointing-game cases.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dlheatmap as dl
from dlheatmap import metrics
from tests import models
from tests.reference import nchw

SIDE = 6


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    """Class 0's logit sums the top-left 3 x 3 pixels (weights 1..9); class 1 has weight 0."""
    weights = np.zeros((SIDE * SIDE, 2), np.float32)
    evidence = np.zeros((SIDE, SIDE), np.float32)
    evidence[:3, :3] = np.arange(1, 10).reshape(3, 3) / 9
    weights[:, 0] = evidence.ravel()
    path = models.linear_onnx(weights, tmp_path_factory.mktemp("linear") / "linear.onnx")
    return dl.read_dl_model(path), weights


@pytest.fixture
def positive_images():
    rng = np.random.default_rng(5)
    return rng.uniform(0.5, 1.5, (4, SIDE, SIDE, 1)).astype(np.float32)


def hand_curve(image, saliency, weights, target, steps, start, end):
    """Scores while the most salient pixels go from ``start`` to ``end``, in numpy."""
    pixels = SIDE * SIDE
    order = sorted(range(pixels), key=lambda p: (-saliency.ravel()[p], p))
    scores = []
    for k in range(steps + 1):
        picture = start.ravel().copy()
        chosen = order[: (k * pixels) // steps]
        picture[chosen] = end.ravel()[chosen]
        scores.append(softmax(picture @ weights)[target])
    return np.array(scores)


def trapezoid(values):
    x = np.linspace(0, 1, len(values))
    return sum((x[i + 1] - x[i]) * (values[i] + values[i + 1]) / 2
               for i in range(len(values) - 1))


def test_auc_is_the_trapezoidal_rule():
    assert metrics.auc(np.full(9, 0.3)) == pytest.approx(0.3)
    assert metrics.auc(np.linspace(0, 1, 5)) == pytest.approx(0.5)
    assert metrics.auc(np.array([0.0, 1.0, 0.0])) == pytest.approx(0.5)
    curves = np.random.default_rng(0).random((3, 11))
    np.testing.assert_allclose(metrics.auc(curves), [trapezoid(c) for c in curves])


@pytest.mark.parametrize("steps", [4, 36, 7])
def test_deletion_and_insertion_curves_by_hand(linear, positive_images, steps):
    model, weights = linear
    maps = np.random.default_rng(steps).random((4, SIDE, SIDE)).astype(np.float32)
    maps[0, 0, :] = 0.5  # ties: row-major order decides
    deleted = metrics.deletion(model, positive_images, maps, targets=0, steps=steps)
    inserted = metrics.insertion(model, positive_images, maps, targets=0, steps=steps,
                                 baseline=0.25)
    np.testing.assert_allclose(deleted.fractions, np.arange(steps + 1) * 36 // steps / 36)
    for n, (image, saliency) in enumerate(zip(positive_images, maps, strict=True)):
        zeros, quarter = np.zeros_like(image), np.full_like(image, 0.25)
        expected = hand_curve(image, saliency, weights, 0, steps, image, zeros)
        np.testing.assert_allclose(deleted.scores[n], expected, atol=1e-6)
        assert deleted.auc[n] == pytest.approx(trapezoid(expected), abs=1e-6)
        expected = hand_curve(image, saliency, weights, 0, steps, quarter, image)
        np.testing.assert_allclose(inserted.scores[n], expected, atol=1e-6)
        assert inserted.auc[n] == pytest.approx(trapezoid(expected), abs=1e-6)


def test_an_oracle_map_beats_random_maps(linear, positive_images):
    model, weights = linear
    oracle = np.broadcast_to(weights[:, 0].reshape(SIDE, SIDE), (4, SIDE, SIDE)).copy()
    rng = np.random.default_rng(1)
    random_maps = rng.random((20, 4, SIDE, SIDE)).astype(np.float32)
    good_del = metrics.deletion(model, positive_images, oracle, targets=0, steps=36).mean_auc
    good_ins = metrics.insertion(model, positive_images, oracle, targets=0, steps=36,
                                 baseline="zeros").mean_auc
    bad_del = [metrics.deletion(model, positive_images, m, targets=0, steps=36).mean_auc
               for m in random_maps]
    bad_ins = [metrics.insertion(model, positive_images, m, targets=0, steps=36,
                                 baseline="zeros").mean_auc for m in random_maps]
    assert good_del < min(bad_del) and good_ins > max(bad_ins)
    # the oracle deletes every evidence pixel within the first 9 of 36 steps
    curve = metrics.deletion(model, positive_images, oracle, targets=0, steps=36).scores
    np.testing.assert_allclose(curve[:, 9:], 0.5, atol=1e-6)


def test_a_model_that_ignores_the_image_has_constant_curves(tmp_path, positive_images):
    path = models.linear_onnx(np.zeros((SIDE * SIDE, 2), np.float32), tmp_path / "flat.onnx")
    maps = np.random.default_rng(2).random((4, SIDE, SIDE)).astype(np.float32)
    for curve in (metrics.deletion(path, positive_images, maps),
                  metrics.insertion(path, positive_images, maps)):
        np.testing.assert_allclose(curve.scores, 0.5, atol=1e-7)
        np.testing.assert_allclose(curve.auc, 0.5, atol=1e-7)


def test_blur_baseline_is_a_gaussian_filter():
    from scipy.ndimage import gaussian_filter

    images = np.random.default_rng(4).random((2, 20, 17, 3)).astype(np.float32)
    expected = np.stack([
        np.stack([gaussian_filter(image[..., c].astype(np.float64), sigma=5, mode="nearest",
                                  truncate=3.0) for c in range(3)], axis=-1)
        for image in images])
    np.testing.assert_allclose(metrics.blur(images), expected, atol=1e-5)


def test_confidence_change_matches_pytorch_grad_cam():
    """pytorch-grad-cam's DropInConfidence is max(0, Y - O) per image (not divided by Y);
    IncreaseInConfidence is 1 where O > Y. Average drop divides by Y (Chattopadhay et al.)."""
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    module, path = models.exported_cnn()
    model = dl.read_dl_model(path)
    rng = np.random.default_rng(6)
    images = rng.standard_normal((6, 32, 32, 3)).astype(np.float32)
    maps = dl.explain(model, images, "grad_cam").heatmaps[:, 0]
    maps[-1] = rng.random((32, 32))  # some map that may raise the confidence
    change = metrics.confidence_change(model, images, maps)
    x = nchw(images)
    targets = [ClassifierOutputSoftmaxTarget(int(i)) for i in change.class_indices]
    with torch.no_grad():
        drop = DropInConfidence()(x, maps, targets, module)
        increase = IncreaseInConfidence()(x, maps, targets, module)
        probabilities = torch.softmax(module(x), dim=1).numpy()
    np.testing.assert_array_equal(change.class_indices, probabilities.argmax(axis=1))
    np.testing.assert_allclose(change.original, probabilities.max(axis=1), atol=1e-6)
    np.testing.assert_allclose(np.maximum(change.original - change.explained, 0), drop,
                               atol=1e-6)
    np.testing.assert_array_equal(change.explained > change.original, increase > 0)
    assert change.average_drop == pytest.approx(100 * np.mean(drop / change.original),
                                                rel=1e-5)
    assert change.increase_in_confidence == pytest.approx(100 * np.mean(increase))


def test_confidence_change_by_hand(linear, positive_images):
    model, weights = linear
    maps = np.random.default_rng(9).random((4, SIDE, SIDE)).astype(np.float32)
    change = metrics.confidence_change(model, positive_images, maps, targets=0)
    flat = positive_images.reshape(4, -1)
    y = softmax(flat @ weights)[:, 0]
    o = softmax((flat * maps.reshape(4, -1)) @ weights)[:, 0]
    np.testing.assert_allclose(change.original, y, atol=1e-6)
    np.testing.assert_allclose(change.explained, o, atol=1e-6)
    assert change.average_drop == pytest.approx(100 * np.mean(np.maximum(y - o, 0) / y),
                                                rel=1e-5)
    assert change.increase_in_confidence == pytest.approx(100 * np.mean(o > y))


def test_pointing_game_by_hand():
    maps = np.zeros((5, 10, 10), np.float32)
    maps[0, 2, 3] = 1  # inside the box
    maps[1, 8, 8] = 1  # 3 rows and 3 columns off the box corner (4, 5): distance 4.24
    maps[2, 8, 5] = 1  # 3 rows below the box
    maps[3, 0, 9] = maps[3, 9, 9] = 1  # ties: the first in row-major order, (0, 9)
    box = (1, 1, 5, 5)
    boxes = [box, box, box, [(7, 0, 9, 2), (0, 8, 0, 9)], box]  # map 4 is constant: a miss
    np.testing.assert_array_equal(metrics.pointing_game(maps, boxes, tolerance=0),
                                  [True, False, False, True, False])
    np.testing.assert_array_equal(metrics.pointing_game(maps, boxes, tolerance=4),
                                  [True, False, True, True, False])
    np.testing.assert_array_equal(metrics.pointing_game(maps, boxes, tolerance=4.25),
                                  [True, True, True, True, False])
    assert metrics.pointing_game(maps[0], box, tolerance=0).tolist() == [True]


def test_metrics_score_the_evidence_cnn_sensibly():
    """On the trained model with known evidence, Grad-CAM points at the blobs far more often
    than chance and beats a random map on insertion."""
    path = models.trained_evidence_cnn()
    images, labels, centres = models.evidence_images(24, seed=123)
    boxes = [(r - 6, c - 6, r + 6, c + 6) for r, c in centres]
    heat = dl.explain(path, images, "grad_cam", targets=labels).heatmaps[:, 0]
    random_maps = np.random.default_rng(0).random(heat.shape).astype(np.float32)
    assert metrics.pointing_game(heat, boxes, tolerance=3).mean() >= 0.6
    assert metrics.pointing_game(random_maps, boxes, tolerance=3).mean() < 0.4
    assert (metrics.insertion(path, images, heat, labels, steps=16).mean_auc >
            metrics.insertion(path, images, random_maps, labels, steps=16).mean_auc)


BAD = [
    ("maps of the wrong shape", {"maps": np.zeros((4, SIDE, SIDE + 1))}, 1303),
    ("maps not an array", {"maps": [[0.0]]}, 1203),
    ("maps with NaN", {"maps": np.full((4, SIDE, SIDE), np.nan)}, 1303),
    ("steps 0", {"steps": 0}, 1305),
    ("unknown baseline", {"baseline": "noise"}, 1306),
    ("unknown score", {"score": "energy"}, 1307),
    ("chunk 0", {"chunk": 0}, 1308),
    ("two targets per image", {"targets": [[0, 1]] * 4}, 1404),
    ("unknown class", {"targets": 2}, 7853),
]


@pytest.mark.parametrize("description,changes,code", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments(linear, positive_images, description, changes, code):
    model, _ = linear
    arguments = {"maps": np.zeros((4, SIDE, SIDE), np.float32), **changes}
    maps = arguments.pop("maps")
    with pytest.raises(dl.HOperatorError) as error:
        metrics.deletion(model, positive_images, maps, **arguments)
    assert error.value.error_code == code, error.value


def test_confidence_needs_maps_in_unit_range(linear, positive_images):
    model, _ = linear
    with pytest.raises(dl.HOperatorError) as error:
        metrics.confidence_change(model, positive_images, np.full((4, SIDE, SIDE), 2.0))
    assert error.value.error_code == 1303
