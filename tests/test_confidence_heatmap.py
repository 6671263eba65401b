"""gen_dl_model_classification_heatmap: the confidence-based (occlusion) heatmap.

Truths: a brute-force occlusion written here (one occluded image at a time, through
apply_dl_model, the interpolation between square centres by explicit loops) for the
vectorised batches; the trained
evidence model, whose class evidence sits at a known place, for the pointing game, with
controls showing that the criterion can fail.
"""

from __future__ import annotations

import numpy as np
import pytest

import dlheatmap as dl
from dlheatmap import occlusion
from dlheatmap.results import heatmap_entry
from tests import models
from tests.conformance_fixtures import valid_image


def _starts(length: int, feature: int, step: int) -> list[int]:
    size = min(feature, length)
    starts = list(range(0, length - size + 1, step))
    return starts if starts[-1] == length - size else [*starts, length - size]


def brute_force(model, image, class_id, feature, step):
    """Heatmap and maximum deviation as spec/decisions.md defines them, one square at a time:
    deviations at the squares' centres, interpolated linearly in between, pixel by pixel."""
    def confidence(img):
        (result,) = dl.apply_dl_model(model, [{"image": img}], [])
        return result["classification_confidences"][result["classification_class_ids"]
                                                    .index(class_id)]

    height, width, _ = image.shape
    base = confidence(image)
    tops, lefts = _starts(height, feature, step), _starts(width, feature, step)
    grid = np.empty((len(tops), len(lefts)))
    for i, top in enumerate(tops):
        for j, left in enumerate(lefts):
            hidden = image.copy()
            hidden[top:top + feature, left:left + feature] = image.mean(axis=(0, 1))
            grid[i, j] = base - confidence(hidden)

    def between(position, starts, length):
        """(index, index, weight of the second) of the two centres around ``position``."""
        centres = [start + (min(feature, length) - 1) / 2 for start in starts]
        if position <= centres[0]:
            return 0, 0, 0.0
        if position >= centres[-1]:
            return len(centres) - 1, len(centres) - 1, 0.0
        k = max(i for i, c in enumerate(centres) if c <= position)
        if k == len(centres) - 1:
            return k, k, 0.0
        return k, k + 1, (position - centres[k]) / (centres[k + 1] - centres[k])

    heat = np.zeros((height, width))
    for row in range(height):
        r0, r1, wr = between(row, tops, height)
        for col in range(width):
            c0, c1, wc = between(col, lefts, width)
            top_value = (1 - wc) * grid[r0, c0] + wc * grid[r0, c1]
            bottom_value = (1 - wc) * grid[r1, c0] + wc * grid[r1, c1]
            heat[row, col] = (1 - wr) * top_value + wr * bottom_value
    heat = np.clip(heat, 0, None)
    return heat / heat.max() if heat.max() > 0 else heat, grid.max()


@pytest.mark.parametrize("feature,step", [(12, 7), (8, 8), (40, 5)])
def test_matches_a_brute_force_occlusion(feature, step):
    model = dl.read_dl_model(models.tiny_cnn())
    images = [valid_image(seed) for seed in range(2)]
    samples = [{"image": image} for image in images]
    results = dl.apply_dl_model(model, samples, [])
    dl.gen_dl_model_classification_heatmap(model, samples, results,
                                           {"feature_size": feature, "sampling_size": step})
    for image, result in zip(images, results, strict=True):
        entry = heatmap_entry(result, "heatmap_confidence_based")
        assert entry.class_id == result["classification_class_ids"][0]
        heat, deviation = brute_force(model, image, entry.class_id, feature, step)
        np.testing.assert_allclose(entry.image, heat, atol=2e-4)
        assert entry.max_deviation == pytest.approx(deviation, abs=1e-5)
        assert entry.image.dtype == np.float32 and entry.image.shape == image.shape[:2]


def test_target_class_id_and_keys_as_halcon_names_them():
    model = dl.read_dl_model(models.tiny_cnn())
    sample = {"image": valid_image(3)}
    result = dl.apply_dl_model(model, sample, [])[0]
    dl.gen_dl_model_classification_heatmap(model, sample, result,
                                           {"target_class_id": [2], "feature_size": 16})
    entry = result["heatmap_confidence_based"]
    assert sorted(entry) == ["classification_heatmap_maxdeviation", "heatmap_image_class_2"]
    heat, deviation = brute_force(model, sample["image"], 2, 16, 10)
    np.testing.assert_allclose(entry["heatmap_image_class_2"], heat, atol=2e-4)
    assert entry["classification_heatmap_maxdeviation"] == pytest.approx(deviation, abs=1e-5)


def test_occluded_images_go_through_onnxruntime_in_batches(monkeypatch):
    """Every occluded copy of every image of one call travels in a few large runs."""
    model = dl.read_dl_model(models.tiny_cnn())
    runs = []
    original = dl.Model.run

    def spy(self, images, *args, **kwargs):
        runs.append(len(images))
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(dl.Model, "run", spy)
    images = np.stack([valid_image(seed) for seed in range(5)])
    found = occlusion.occlusion(model, images, np.zeros(5, np.int64), 8, 4, model.params)
    positions = len(_starts(32, 8, 4)) ** 2  # 7 x 7
    assert found.deviations.shape == (5, 7, 7)
    assert sum(runs) == 5 + 5 * positions
    assert len(runs) <= 2 + 5 * positions // occlusion.RUN_BATCH


def test_pointing_game_on_the_trained_evidence_model():
    """The heatmap's maximum lies within 10 % of the image side of the class evidence on at
    least 85 % of held-out images; the same criterion fails for heatmaps paired with other
    images and for peaks at random places."""
    model = dl.read_dl_model(models.trained_evidence_cnn())
    images, _, _ = models.evidence_images(120, seed=777)
    samples = [{"image": image} for image in images]
    results = dl.apply_dl_model(model, samples, [])
    dl.gen_dl_model_classification_heatmap(model, samples, results,
                                           {"feature_size": 12, "sampling_size": 4})
    blobs = images[..., 0] == 1.0  # the blob's pixels are exactly 1, the clutter below 0.25
    peaks = models.heatmap_peaks(heatmap_entry(result, "heatmap_confidence_based").image
                                 for result in results)
    tolerance = 0.1 * models.EVIDENCE_SIZE
    assert models.evidence_pointing_score(peaks, blobs, tolerance) >= 0.85
    # controls: every heatmap paired with another image's blob, and peaks at random places
    assert models.evidence_pointing_score(peaks, np.roll(blobs, 1, axis=0), tolerance) <= 0.5
    random_peaks = np.random.default_rng(5).integers(0, models.EVIDENCE_SIZE, (len(blobs), 2))
    assert models.evidence_pointing_score(random_peaks, blobs, tolerance) <= 0.5


def test_nothing_is_added_after_an_error():
    model = dl.read_dl_model(models.tiny_cnn())
    sample = {"image": valid_image(0)}
    result = dl.apply_dl_model(model, sample, [])[0]
    before = dict(result)
    with pytest.raises(dl.HOperatorError) as raised:
        dl.gen_dl_model_classification_heatmap(model, [sample, sample], [result, dict(result)],
                                               {"target_class_id": 7})
    assert raised.value.error_code == 7853
    assert result == before


def test_square_positions_cover_every_pixel():
    for length, feature, step in [(48, 12, 4), (30, 30, 10), (10, 30, 10), (17, 5, 3)]:
        starts = occlusion.square_starts(length, feature, step)
        assert occlusion.coverage(starts, feature, length).any(axis=0).all()
        assert starts[0] == 0 and starts[-1] == max(0, length - feature)
