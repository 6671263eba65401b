"""dlheatmap.explain: shapes, targets, class IDs, batching and argument checks.

Truths used: separate single-target calls, plain onnxruntime probabilities, the HALCON operator
for the same Grad-CAM, and the error codes documented in explain's docstring.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import dlheatmap as dl
from dlheatmap.explain import METHODS, Explanation, explain
from dlheatmap.methods import ScoreCAM
from tests import models
from tests.conftest import random_images
from tests.graphs import Graph

LAYER_METHODS = sorted(name for name, cls in METHODS.items() if cls.uses_layer())


@pytest.fixture(scope="module")
def tiny_model(tiny_path):
    """One handle for the tests that never change it."""
    return dl.read_dl_model(tiny_path)


@pytest.fixture(scope="module")
def images():
    return random_images(np.random.default_rng(3), 3, 32, 32, 3)


def test_exported_from_the_package():
    assert dl.explain is explain and dl.Explanation is Explanation


def test_registry_names_every_method_with_its_kind():
    expected = {"saliency", "guided_backprop", "grad_cam", "guided_grad_cam",
                "grad_cam_plus_plus", "xgrad_cam", "layer_cam", "hires_cam", "score_cam",
                "eigen_cam"}
    assert set(METHODS) == expected
    assert {name for name, cls in METHODS.items() if cls.kind == "image"} == {
        "guided_backprop", "guided_grad_cam"}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_shapes_follow_the_kind(tiny_model, images, name):
    result = explain(tiny_model, images, name, targets=[[0, 1], [2, 3], [3, 3]])
    kind = METHODS[name].kind
    assert result.method == name and result.kind == kind
    shape = (3, 2, 32, 32) if kind == "map" else (3, 2, 32, 32, 3)
    assert result.heatmaps.shape == shape and result.heatmaps.dtype == np.float32
    assert np.isfinite(result.heatmaps).all()
    np.testing.assert_array_equal(result.class_ids, [[0, 1], [2, 3], [3, 3]])
    assert result.probabilities.shape == (3, 4)
    if kind == "map":  # default normalisation: ReLU, divide by the maximum
        assert result.heatmaps.min() >= 0 and result.heatmaps.max() <= 1
    if name in LAYER_METHODS and name != "guided_grad_cam":
        assert result.layer == "/7/Conv" and result.layer_maps.shape == (3, 2, 16, 16)


@pytest.mark.parametrize("name", ["grad_cam", "saliency", "score_cam", "guided_backprop"])
def test_several_targets_equal_separate_calls(tiny_model, images, name):
    both = explain(tiny_model, images, name, targets=np.array([[1, 2], [0, 3], [2, 2]]))
    first = explain(tiny_model, images, name, targets=[1, 0, 2])
    second = explain(tiny_model, images, name, targets=[2, 3, 2])
    np.testing.assert_allclose(both.heatmaps[:, 0], first.heatmaps[:, 0], atol=1e-6)
    np.testing.assert_allclose(both.heatmaps[:, 1], second.heatmaps[:, 0], atol=1e-6)
    single = explain(tiny_model, images[1], name, targets=0)  # one H x W x C image
    assert single.heatmaps.shape[:2] == (1, 1)
    np.testing.assert_allclose(single.heatmaps[0, 0], first.heatmaps[1, 0], atol=1e-6)


def test_default_target_is_the_top_class(tiny_model, tiny_path, images):
    session = ort.InferenceSession(str(tiny_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": images.transpose(0, 3, 1, 2).copy()})[0]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for name in ("grad_cam", "eigen_cam", "guided_backprop"):
        result = explain(tiny_model, images, name)
        np.testing.assert_array_equal(result.class_indices[:, 0], logits.argmax(axis=1))
        np.testing.assert_allclose(result.probabilities, probabilities, atol=1e-5)


def test_targets_are_class_ids(tiny, images):
    model = tiny
    plain = explain(model, images, "grad_cam", targets=[3, 1, 0])
    dl.set_dl_model_param(model, "class_ids", [10, 20, 30, 40])
    by_id = explain(model, images, "grad_cam", targets=[40, 20, 10])
    np.testing.assert_array_equal(by_id.class_ids[:, 0], [40, 20, 10])
    np.testing.assert_array_equal(by_id.class_indices[:, 0], [3, 1, 0])
    np.testing.assert_allclose(by_id.heatmaps, plain.heatmaps, atol=1e-6)
    with pytest.raises(dl.HOperatorError) as error:
        explain(model, images, "grad_cam", targets=3)  # an index, not an ID
    assert error.value.error_code == 7853


def test_matches_the_halcon_operator(tiny_model, images):
    result = explain(tiny_model, images, "grad_cam", targets=2)
    halcon = dl.gen_dl_model_heatmap(tiny_model, [{"image": i} for i in images], "grad_cam",
                                     2, None)
    for ours, theirs in zip(result.heatmaps[:, 0], halcon, strict=True):
        np.testing.assert_allclose(ours, theirs["heatmap_grad_cam"]["heatmap_image_class_2"],
                                   atol=1e-6)


@pytest.mark.parametrize("name", ["grad_cam", "guided_grad_cam", "score_cam", "eigen_cam"])
def test_batches_and_fixed_batch_graphs_give_the_same_maps(tiny, images, name):
    """Per-image targets survive batching (batch_size 2 over 3 images) and a graph with a
    fixed batch of 2 (the last batch padded)."""
    targets = [[1, 3], [0, 0], [2, 1]]
    whole = tiny
    dl.set_dl_model_param(whole, "batch_size", 3)
    reference = explain(whole, images, name, targets=targets)
    dl.set_dl_model_param(whole, "batch_size", 2)
    split = explain(whole, images, name, targets=targets)
    fixed = dl.read_dl_model(models.tiny_cnn(dynamic_batch=False))
    if fixed.info.image_input.batch is None:
        pytest.skip("the exporter kept the batch dynamic")
    padded = explain(fixed, images, ScoreCAM(batch=3) if name == "score_cam" else name,
                     targets=targets)
    for other in (split, padded):
        np.testing.assert_array_equal(other.class_indices, reference.class_indices)
        np.testing.assert_allclose(other.heatmaps, reference.heatmaps, atol=1e-5)


def test_a_path_works_like_a_handle(tiny_model, tiny_path, images):
    by_path = explain(str(tiny_path), images, "layer_cam")
    by_handle = explain(tiny_model, images, "layer_cam")
    np.testing.assert_allclose(by_path.heatmaps, by_handle.heatmaps, atol=1e-6)


def test_grey_images(rng):
    model = dl.read_dl_model(models.tiny_cnn(channels=1))
    image = random_images(rng, 1, 32, 32, 1)[0, :, :, 0]
    assert explain(model, image, "grad_cam").heatmaps.shape == (1, 1, 32, 32)
    assert explain(model, image, "guided_backprop").heatmaps.shape == (1, 1, 32, 32, 1)


def test_halcon_surface_stays_strict(tiny_model, images):
    with pytest.raises(dl.HOperatorError) as error:
        dl.gen_dl_model_heatmap(tiny_model, [{"image": images[0]}], "saliency", [], None)
    assert error.value.error_code == 7852


BAD_CALLS = [
    # (description, keyword changes, expected HALCON code)
    ("model of wrong type", {"model": 42}, 1201),
    ("missing file", {"model": "/nonexistent/model.onnx"}, 7801),
    ("images not an array", {"images": [[0.0]]}, 1202),
    ("images of 5 dimensions", {"images": np.zeros((1, 1, 32, 32, 3), np.float32)}, 1302),
    ("integer images", {"images": np.zeros((1, 32, 32, 3), np.uint8)}, 1302),
    ("wrong size", {"images": np.zeros((1, 31, 32, 3), np.float32)}, 1302),
    ("NaN pixel", {"images": np.full((1, 32, 32, 3), np.nan, np.float32)}, 1302),
    ("no images", {"images": np.zeros((0, 32, 32, 3), np.float32)}, 1402),
    ("method of wrong type", {"method": 3}, 1203),
    ("unknown method", {"method": "lime"}, 7852),
    ("targets a string", {"targets": "cat"}, 1204),
    ("targets a bool", {"targets": True}, 1204),
    ("targets floats", {"targets": [0.5, 1.0]}, 1204),
    ("targets empty", {"targets": []}, 1404),
    ("targets per image, wrong count", {"targets": [0, 1, 2]}, 1404),
    ("unknown class ID", {"targets": 4}, 7853),
    ("layer not a string", {"layer": 7}, 1205),
    ("unknown layer", {"layer": "/99/Conv"}, 7785),
    ("layer without spatial output", {"layer": "/10/Flatten"}, 7785),
    ("layer for saliency", {"method": "saliency", "layer": "/7/Conv"}, 1305),
    ("unknown score", {"score": "energy"}, 1306),
    ("unknown normalisation", {"normalize": "sigmoid"}, 1307),
    ("upsample not a bool", {"upsample": "yes"}, 1208),
    ("negative eps", {"eps": -1.0}, 1309),
]


@pytest.mark.parametrize("description,changes,code", BAD_CALLS,
                         ids=[call[0] for call in BAD_CALLS])
def test_bad_arguments_raise_halcon_codes(tiny_model, images, description, changes, code):
    arguments = {"model": tiny_model, "images": images[:2], "method": "grad_cam"}
    arguments.update(changes)
    with pytest.raises(dl.HOperatorError) as error:
        explain(**arguments)
    assert error.value.error_code == code, error.value


def test_cleared_handle(tiny, images):
    model = tiny
    dl.clear_dl_model(model)
    with pytest.raises(dl.HOperatorError) as error:
        explain(model, images, "grad_cam")
    assert error.value.error_code == 2450


def test_symbolic_sizes_nhwc_and_log_softmax(rng):
    """A graph with named height and width takes the images' size for the call (the handle is
    unchanged); NHWC input and a LogSoftmax head work as for the HALCON operator."""
    path = models.variant_cnn(head="log_softmax", spatial="symbolic", layout="NHWC")
    model = dl.read_dl_model(path)
    assert model.info.image_input.height is None and model.info.image_input.layout == "NHWC"
    before = model.params
    images = random_images(rng, 2, 40, 48, 3)
    result = explain(model, images, "grad_cam", targets=1)
    assert result.heatmaps.shape == (2, 1, 40, 48) and model.params == before
    dl.set_dl_model_param(model, "image_height", 40)
    dl.set_dl_model_param(model, "image_width", 48)
    halcon = dl.gen_dl_model_heatmap(model, [{"image": i} for i in images], "grad_cam", 1, None)
    for ours, theirs in zip(result.heatmaps[:, 0], halcon, strict=True):
        np.testing.assert_allclose(ours, theirs["heatmap_grad_cam"]["heatmap_image_class_1"],
                                   atol=1e-5)
    applied = dl.apply_dl_model(model, [{"image": i} for i in images], [])
    for row, probabilities in zip(applied, result.probabilities, strict=True):
        by_id = dict(zip(row["classification_class_ids"], row["classification_confidences"],
                         strict=True))
        np.testing.assert_allclose([by_id[i] for i in range(4)], probabilities, atol=1e-5)
    for name in ("saliency", "score_cam", "guided_grad_cam"):
        assert explain(model, images, name).heatmaps.shape[:4] == (2, 1, 40, 48)


@pytest.mark.parametrize("method", ["grad_cam", "saliency", "guided_grad_cam", "layer_cam"])
def test_both_engines_give_the_same_explanation(tiny_model, images, method):
    """engine='onnxruntime' (the gradient graph) and engine='torch' (onnx2torch) compute the
    same heatmaps, several classes per sample included."""
    targets = [[0, 1]] * len(images)
    ours = explain(tiny_model, images, method, targets, engine="onnxruntime", normalize="none")
    theirs = explain(tiny_model, images, method, targets, engine="torch", normalize="none")
    np.testing.assert_array_equal(ours.class_ids, theirs.class_ids)
    peak = np.abs(theirs.heatmaps).max()
    assert peak > 0
    np.testing.assert_allclose(ours.heatmaps, theirs.heatmaps, atol=1e-5 * peak, rtol=0)


def test_engine_argument_is_checked(tiny_model, images, tmp_path):
    with pytest.raises(dl.HOperatorError) as info:
        explain(tiny_model, images, "grad_cam", engine="tensorflow")
    assert info.value.error_code == 1310
    # a local response normalisation has no gradient rule: onnxruntime cannot serve it
    g = Graph()
    _, act = g.body()
    lrn = g.node("LRN", [act], size=3)
    path = tmp_path / "lrn.onnx"
    onnx.save(g.model(g.pooled_head(lrn, Graph.CHANNELS)), path)
    size = Graph.SIZE
    pictures = np.random.default_rng(0).random((2, size, size, 3)).astype(np.float32)
    with pytest.raises(dl.HOperatorError) as info:
        explain(path, pictures, "grad_cam", engine="onnxruntime")
    assert info.value.error_code == 1310 and "LRN" in str(info.value)
    assert explain(path, pictures, "grad_cam").heatmaps.shape == (2, 1, size, size)
