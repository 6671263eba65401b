"""gen_dl_model_heatmap against independent implementations and HALCON's rules.

Truths used: captum's LayerGradCam and GuidedBackprop on the same graph converted to torch by
onnx2torch directly (not through dlheatmap), a bilinear resize written here in numpy, the
scaling rules as HALCON states them, and a trained model whose class evidence sits at a
known place.
"""

from __future__ import annotations

import numpy as np
import pytest

import dlheatmap as dl
from tests import models, zoo
from tests.conftest import random_images
from tests.engines import gather_layer, gather_whole
from tests.reference import bilinear_resize, captum_layer_map

ARCHITECTURES = [
    # (torchvision name, input size): a ResNet, MobileNets with ReLU6 / HardSwish, a DenseNet
    ("resnet18", 64),
    ("mobilenet_v2", 64),
    ("mobilenet_v3_small", 64),
    ("densenet121", 64),
]


def halcon_scaling(maps: np.ndarray, scaling: str) -> np.ndarray:
    """HALCON's scaling rules, from the operator reference's wording."""
    out = []
    for m in maps.astype(np.float64):
        if scaling == "scale_after_relu":
            m = np.maximum(m, 0)
            m = m / m.max() if m.max() > 0 else m
        elif scaling == "scale_before_relu":
            peak = np.abs(m).max()
            m = np.maximum(m / peak if peak > 0 else m, 0)
        else:
            m = np.maximum(m, 0)
        out.append(m)
    return np.array(out)


@pytest.fixture(scope="module", params=ARCHITECTURES, ids=[a for a, _ in ARCHITECTURES])
def architecture(request):
    name, size = request.param
    path = models.torchvision_model(name, size=size, num_classes=6)
    return path, size


def test_grad_cam_matches_captum(architecture, rng):
    path, size = architecture
    model = dl.read_dl_model(path)
    dl.set_dl_model_param(model, "batch_size", 2)
    images = random_images(rng, 3, size, size, 3)
    samples = [{"image": image} for image in images]
    results = dl.gen_dl_model_heatmap(model, samples, "grad_cam", [], None)

    core = dl.heatmap.grad_cam(model, images)
    reference = captum_layer_map(path, images, core.tensor, core.targets)
    assert core.layer.name == model.default_target_layer().name
    for ours, theirs in zip(core.layer_maps, reference, strict=True):
        peak = np.abs(theirs).max()
        assert peak > 0
        np.testing.assert_allclose(ours, theirs, atol=1e-4 * peak, rtol=0)

    expected = halcon_scaling(bilinear_resize(reference, size, size), "scale_after_relu")
    for result, exp, target in zip(results, expected, core.targets, strict=True):
        class_id = result["classification_class_ids"][0]
        assert class_id == target  # default: each sample's top class (IDs = indices here)
        heat = result["heatmap_grad_cam"][f"heatmap_image_class_{class_id}"]
        assert heat.dtype == np.float32 and heat.shape == (size, size)
        np.testing.assert_allclose(heat, exp, atol=2e-4)


@pytest.mark.parametrize("scaling", ["scale_after_relu", "scale_before_relu", "none"])
def test_scaling_rules(tiny, rng, scaling):
    images = random_images(rng, 2, 32, 32, 3)
    core = dl.heatmap.grad_cam(tiny, images, scaling=scaling)
    expected = halcon_scaling(bilinear_resize(core.layer_maps, 32, 32), scaling)
    np.testing.assert_allclose(core.heatmaps, expected, atol=1e-5 * max(1, expected.max()))
    results = dl.gen_dl_model_heatmap(tiny, [{"image": i} for i in images], "grad_cam", [],
                                      {"scaling": scaling})
    for result, exp in zip(results, core.heatmaps, strict=True):
        (heat,) = result["heatmap_grad_cam"].values()
        np.testing.assert_array_equal(heat, exp)
        if scaling != "none":
            assert heat.min() >= 0.0 and heat.max() <= 1.0


def test_all_zero_map_stays_zero():
    maps = np.zeros((1, 4, 4), np.float32)
    negative = -np.ones((1, 4, 4), np.float32)
    for scaling in ("scale_after_relu", "scale_before_relu", "none"):
        for m in (maps, negative):
            out = dl.methods.normalize(m, dl.methods.HALCON_SCALINGS[scaling])
            assert np.isfinite(out).all() and not out.any()


def test_batches_match_single_samples(tiny, rng):
    images = random_images(rng, 5, 32, 32, 3)
    samples = [{"image": i} for i in images]
    dl.set_dl_model_param(tiny, "batch_size", 3)
    batched = dl.gen_dl_model_heatmap(tiny, samples, "grad_cam", [], None)
    dl.set_dl_model_param(tiny, "batch_size", 1)
    for sample, result in zip(samples, batched, strict=True):
        single = dl.gen_dl_model_heatmap_s(tiny, sample, "grad_cam", [], None)
        assert single["classification_class_ids"] == result["classification_class_ids"]
        (a,), (b,) = single["heatmap_grad_cam"].values(), result["heatmap_grad_cam"].values()
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("method", ["grad_cam", "guided_grad_cam"])
def test_a_call_runs_in_batches_of_batch_size(tiny, rng, method):
    """All samples of one call are computed as batches of batch_size, not one by one: 7
    samples at batch_size 3 run as 3, 3 and 1 consecutive samples, in order.

    Recorded, whatever calls them: every onnxruntime run fed the image input, and every call
    of a converted torch graph (a torch.fx GraphModule, as onnx2torch makes) with its first
    argument. grad_cam runs onnxruntime per batch (and, where it differentiates the layers
    after the target layer in torch, that tail once per batch); guided_grad_cam runs
    onnxruntime's whole-graph gradient model per batch, or the whole graph in torch.
    """
    from torch.fx import GraphModule
    from torch.nn.modules.module import register_module_forward_pre_hook

    images = random_images(rng, 7, 32, 32, 3)
    samples = [{"image": i} for i in images]
    dl.set_dl_model_param(tiny, "batch_size", 3)
    dl.gen_dl_model_heatmap(tiny, samples[:1], method, [], None)  # sessions, shapes: cached
    graph_calls = []

    def record(module, args):
        if isinstance(module, GraphModule):
            graph_calls.append(args[0].detach().cpu().numpy().copy())

    hook = register_module_forward_pre_hook(record)
    try:
        with zoo.onnxruntime_batches() as fed:
            results = dl.gen_dl_model_heatmap(tiny, samples, method, [], None)
    finally:
        hook.remove()
    assert len(results) == 7

    def consecutive(batches):
        """Batches of 3, 3, 1 consecutive images (in N x H x W x C, or the graph's NCHW)."""
        assert [len(batch) for batch in batches] == [3, 3, 1]
        for batch, start in zip(batches, (0, 3, 6), strict=True):
            if batch.shape[1:] != images.shape[1:]:
                batch = batch.transpose(0, 2, 3, 1)
            np.testing.assert_array_equal(batch, images[start : start + len(batch)])

    # the images go to onnxruntime (its gradient graph, or the forward pass before a torch
    # tail) or, on the torch engine's whole-graph path, to the converted graph
    consecutive(fed if fed else graph_calls)
    # a torch tail, where used, takes the layer's activation, batch by batch
    assert [len(x) for x in graph_calls] in ([], [3, 3, 1])


@pytest.mark.parametrize("method", ["grad_cam", "guided_grad_cam"])
def test_target_classes_are_class_ids_not_indices(tiny, rng, method):
    """With class_ids [10, 11, 12, 13], target class 12 is the class at index 2: its result
    key names the ID and its map is the map index 2 had before the relabelling."""
    prefix = {"grad_cam": "heatmap_image_class_",
              "guided_grad_cam": "guided_grad_cam_image_class_"}[method]
    key = f"heatmap_{method}"
    samples = [{"image": i} for i in random_images(rng, 2, 32, 32, 3)]
    before = [dl.gen_dl_model_heatmap(tiny, samples, method, [index], None)
              for index in range(4)]
    dl.set_dl_model_param(tiny, "class_ids", [10, 11, 12, 13])
    after = dl.gen_dl_model_heatmap(tiny, samples, method, [12], None)
    for index, (result, old) in enumerate(zip(after, before[2], strict=True)):
        assert list(result[key]) == [f"{prefix}12"]
        assert result["classification_class_ids"] == [
            10 + i for i in old["classification_class_ids"]]
        expected = old[key][f"{prefix}2"]
        np.testing.assert_allclose(result[key][f"{prefix}12"], expected, rtol=0, atol=1e-6)
        # the test can fail: every other class index gives another map
        for other in (0, 1, 3):
            (other_map,) = before[other][index][key].values()
            assert np.abs(other_map - expected).max() > 1e-3 * np.abs(expected).max()
    with pytest.raises(dl.HOperatorError) as error:  # the index itself is no longer an ID
        dl.gen_dl_model_heatmap(tiny, samples, method, [2], None)
    assert error.value.error_code == 7853


def test_result_layout_is_stable(tiny, rng):
    """Result keys, their order, dtypes and shapes are as documented in spec/decisions.md."""
    image = random_images(rng, 1, 32, 32, 3)[0]
    result = dl.gen_dl_model_heatmap_s(tiny, {"image": image}, "grad_cam", [2], None)
    applied = dl.apply_dl_model(tiny, {"image": image}, [])[0]
    assert list(result) == [*applied, "heatmap_grad_cam"]
    assert list(applied) == ["classification_class_ids", "classification_class_names",
                             "classification_confidences"]
    assert result["classification_class_ids"] == applied["classification_class_ids"]
    assert result["classification_class_names"] == applied["classification_class_names"]
    np.testing.assert_allclose(result["classification_confidences"],
                               applied["classification_confidences"], rtol=1e-6)
    assert list(result["heatmap_grad_cam"]) == ["heatmap_image_class_2"]
    (heat,) = result["heatmap_grad_cam"].values()
    assert heat.dtype == np.float32 and heat.shape == (32, 32)

    guided = dl.gen_dl_model_heatmap_s(tiny, {"image": image}, "guided_grad_cam", (2,), [])
    assert list(guided) == [*applied, "heatmap_guided_grad_cam"]
    assert list(guided["heatmap_guided_grad_cam"]) == ["guided_grad_cam_image_class_2"]
    (image_out,) = guided["heatmap_guided_grad_cam"].values()
    assert image_out.dtype == np.float32 and image_out.shape == (32, 32, 3)


def test_grey_two_dimensional_images(rng):
    model = dl.read_dl_model(models.tiny_cnn(channels=1))
    image = random_images(rng, 1, 32, 32, 1)[0, :, :, 0]
    result = dl.gen_dl_model_heatmap_s(model, {"image": image}, "grad_cam", [], None)
    (heat,) = result["heatmap_grad_cam"].values()
    assert heat.shape == (32, 32)
    guided = dl.gen_dl_model_heatmap_s(model, {"image": image}, "guided_grad_cam", [], None)
    (out,) = guided["heatmap_guided_grad_cam"].values()
    assert out.shape == image.shape


@pytest.mark.parametrize("engine", ["onnxruntime", "torch"])
def test_split_equals_whole_graph_gradients(rng, engine):
    """Both splits (forward in onnxruntime; the tail differentiated in onnxruntime's appended
    gradient nodes, or converted to torch) give the gradients of the whole graph in torch."""
    path = models.torchvision_model("resnet18", size=64, num_classes=6)
    model = dl.read_dl_model(path)
    images = random_images(rng, 3, 64, 64, 3)
    layer = model.info.by_name["/layer3/layer3.1/conv2/Conv"]  # a skip connection crosses
    choose = dl.heatmap.fixed_class(1)
    split = gather_layer(model, images, choose, layer.output, model.params,
                                         engine=engine)
    whole = gather_whole(model, images, choose, layer.output, model.params,
                                          guided=False)
    np.testing.assert_allclose(split.activations, whole.activations, atol=1e-4)
    peak = np.abs(whole.gradients).max()
    np.testing.assert_allclose(split.gradients, whole.gradients, atol=1e-5 * peak)
    np.testing.assert_allclose(split.probabilities, whole.probabilities, atol=1e-5)


def test_heatmaps_point_at_the_evidence():
    """Pointing game: the heatmap's maximum lies within 10% of the image side of the class
    evidence (the nearest pixel of the blob) on at least 90% of held-out images.

    The criterion can fail: applied to the same heatmaps paired with other images (or to
    peaks at random places) it scores far below 90%.
    """
    model = dl.read_dl_model(models.trained_evidence_cnn())
    images, labels, _ = models.evidence_images(150, seed=777)
    results = dl.gen_dl_model_heatmap(model, [{"image": i} for i in images], "grad_cam",
                                      [], None)
    accuracy = np.mean([r["classification_class_ids"][0] == y for r, y in
                        zip(results, labels, strict=True)])
    assert accuracy >= 0.95
    blobs = images[..., 0] == 1.0  # the blob's pixels are exactly 1, the clutter below 0.25
    assert all(blob.sum() >= 20 for blob in blobs)
    peaks = []
    for result in results:
        (heat,) = result["heatmap_grad_cam"].values()
        peaks.append(np.unravel_index(np.argmax(heat), heat.shape))
    tolerance = 0.1 * models.EVIDENCE_SIZE

    def pointing_score(peaks, blobs) -> float:
        hits = []
        for (row, col), blob in zip(peaks, blobs, strict=True):
            rows, cols = np.nonzero(blob)
            hits.append(np.hypot(rows - row, cols - col).min() <= tolerance)
        return float(np.mean(hits))

    assert pointing_score(peaks, blobs) >= 0.9
    # sanity: another image's blob (every image paired with the next one's heatmap) ...
    assert pointing_score(peaks, np.roll(blobs, 1, axis=0)) <= 0.5
    # ... or a peak at a random place
    random_peaks = np.random.default_rng(5).integers(0, models.EVIDENCE_SIZE, (len(blobs), 2))
    assert pointing_score(random_peaks, blobs) <= 0.5


