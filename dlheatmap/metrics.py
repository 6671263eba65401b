"""How faithful is a heatmap? Deletion / insertion AUC, average drop and increase in
confidence, and the pointing game.

All perturbed images go through onnxruntime in batches. Heatmaps are H x W maps at the image
size, one per image (``Explanation.heatmaps[:, t]`` for target column t; reduce image-kind
heatmaps, e.g. ``np.abs(h).max(axis=-1)``, first).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlheatmap.arguments import prepare
from dlheatmap.engine import SCORES, forward_scores
from dlheatmap.errors import wrong_count, wrong_type, wrong_value
from dlheatmap.explain import target_indices
from dlheatmap.model import Model

DEFAULT_STEPS = 32
DEFAULT_CHUNK = 64
BLUR_SIGMA = 5.0
POINTING_TOLERANCE = 15
BASELINES = ("zeros", "blur", "mean")

__all__ = [
    "ConfidenceChange",
    "PerturbationCurve",
    "auc",
    "blur",
    "confidence_change",
    "deletion",
    "insertion",
    "pointing_game",
]


@dataclass
class PerturbationCurve:
    """Class scores as pixels are removed (deletion) or added (insertion), most salient first.

    Attributes
    ----------
    fractions : ndarray, [steps + 1]
        Fraction of the pixels changed at each step, 0 to 1.
    scores : ndarray, [N, steps + 1]
        The target's score on each perturbed image.
    auc : ndarray, [N]
        Area under each curve (trapezoidal rule over ``fractions``).
    class_indices : ndarray, [N]
        Output index of each image's target class.
    """

    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray
    class_indices: np.ndarray

    @property
    def mean_auc(self) -> float:
        return float(self.auc.mean())


@dataclass
class ConfidenceChange:
    """The target's score on each image (Y) and on the image times its heatmap (O).

    Attributes
    ----------
    original : ndarray, [N]
    explained : ndarray, [N]
    class_indices : ndarray, [N]
    """

    original: np.ndarray
    explained: np.ndarray
    class_indices: np.ndarray

    @property
    def drops(self) -> np.ndarray:
        """max(0, Y - O) / Y per image (0 where Y is 0)."""
        drop = np.maximum(self.original - self.explained, 0)
        return np.where(self.original > 0, drop / np.where(self.original > 0, self.original, 1),
                        0.0)

    @property
    def average_drop(self) -> float:
        """Average drop in % (Chattopadhay et al.): 100 x mean of max(0, Y - O) / Y."""
        return float(100 * self.drops.mean())

    @property
    def increase_in_confidence(self) -> float:
        """Increase in confidence in %: 100 x the fraction of images with O > Y."""
        return float(100 * np.mean(self.explained > self.original))


def auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoidal area under curves sampled at equally spaced points of [0, 1].

    Parameters
    ----------
    curves : ndarray, [..., K]
        K >= 2 values per curve, at 0, 1/(K-1), ..., 1.

    Returns
    -------
    ndarray, [...]
    """
    curves = np.asarray(curves, dtype=np.float64)
    inner = curves.sum(axis=-1) - 0.5 * (curves[..., 0] + curves[..., -1])
    return inner / (curves.shape[-1] - 1)


def deletion(
    model: Model | str | os.PathLike,
    images: np.ndarray,
    maps: np.ndarray,
    targets: Any = None,
    *,
    steps: int = DEFAULT_STEPS,
    baseline: str | float | np.ndarray = "zeros",
    score: str = "probability",
    chunk: int = DEFAULT_CHUNK,
) -> PerturbationCurve:
    """Deletion curve and AUC (Petsiuk et al., RISE, 2018): lower is better.

    Step k of ``steps`` replaces the floor(k * H * W / steps) most salient pixels (all
    channels) by the baseline; step 0 is the image, the last step the baseline. Pixels are
    ranked by map value, highest first, ties in row-major order.

    Parameters
    ----------
    model : Model or path
    images : ndarray
        N x H x W x C (or one image), as for :func:`dlheatmap.explain`.
    maps : ndarray
        N x H x W saliency maps (or one H x W map).
    targets : None, int or sequence
        Class IDs, one per image or one for all; None: each image's top class.
    steps : int
        Number of perturbation steps (default 32): the curve has steps + 1 points.
    baseline : {'zeros', 'blur', 'mean'}, float or ndarray
        What deleted pixels become: 0 (default), the image blurred by a Gaussian of sigma 5
        pixels, each channel's mean, a constant, or an N x H x W x C array.
    score : {'probability', 'logit'}
        The curve's score (default: the class probability, as RISE).
    chunk : int
        Perturbed images per onnxruntime run (dynamic-batch graphs).

    Returns
    -------
    PerturbationCurve

    Raises
    ------
    HOperatorError
        As explain for model, images and targets (1404 for more than one target per image);
        1203/1303 maps of the wrong type, shape or not finite; 1305 steps, 1306 baseline,
        1307 score, 1308 chunk out of range.
    """
    return _curve(model, images, maps, targets, steps, baseline, score, chunk, "deletion")


def insertion(
    model: Model | str | os.PathLike,
    images: np.ndarray,
    maps: np.ndarray,
    targets: Any = None,
    *,
    steps: int = DEFAULT_STEPS,
    baseline: str | float | np.ndarray = "blur",
    score: str = "probability",
    chunk: int = DEFAULT_CHUNK,
) -> PerturbationCurve:
    """Insertion curve and AUC (Petsiuk et al., RISE, 2018): higher is better.

    Starts from the baseline and puts back the floor(k * H * W / steps) most salient pixels
    at step k; the last step is the image.

    Parameters
    ----------
    model, images, maps, targets, steps, score, chunk
        As for :func:`deletion`.
    baseline : {'blur', 'zeros', 'mean'}, float or ndarray
        The starting image: by default the image blurred by a Gaussian of sigma 5 pixels
        (RISE's choice); else as for :func:`deletion`.

    Returns
    -------
    PerturbationCurve

    Raises
    ------
    HOperatorError
        As :func:`deletion`.
    """
    return _curve(model, images, maps, targets, steps, baseline, score, chunk, "insertion")


def confidence_change(
    model: Model | str | os.PathLike,
    images: np.ndarray,
    maps: np.ndarray,
    targets: Any = None,
    *,
    score: str = "probability",
) -> ConfidenceChange:
    """Scores on each image and on the image multiplied by its heatmap (Chattopadhay et al.,
    Grad-CAM++, 2018), for average drop and increase in confidence.

    Parameters
    ----------
    model : Model or path
    images : ndarray
        N x H x W x C (or one image), as for :func:`dlheatmap.explain`.
    maps : ndarray
        N x H x W maps in [0, 1] (for example ``explain``'s default 'max' normalisation); each
        multiplies every channel of its image.
    targets : None, int or sequence
        Class IDs, one per image or one for all; None: each image's top class.
    score : {'probability', 'logit'}
        Default: the class probability, as the paper.

    Returns
    -------
    ConfidenceChange
        ``.average_drop`` and ``.increase_in_confidence`` in %, and the per-image scores.

    Raises
    ------
    HOperatorError
        As explain for model, images and targets (1404 for more than one target per image);
        1203/1303 maps of the wrong type or shape, not finite or outside [0, 1]; 1305 score.
    """
    operator = "confidence_change"
    handle, batch, params, maps, indices = _inputs(model, images, maps, targets, operator)
    _check_score(score, 5, operator)
    if maps.min() < 0 or maps.max() > 1:
        raise wrong_value(3, "maps must lie in [0, 1] (normalise them first)", operator)
    both = np.concatenate([batch, batch * maps[..., None]])
    scores = forward_scores(handle, both, params, score, DEFAULT_CHUNK)
    indices = _top_or(indices, scores[: len(batch)])
    rows = np.arange(len(batch))
    return ConfidenceChange(scores[rows, indices], scores[len(batch) + rows, indices], indices)


def pointing_game(
    maps: np.ndarray, boxes: Sequence, tolerance: float = POINTING_TOLERANCE
) -> np.ndarray:
    """Pointing game (Zhang et al., 2016): does each map's maximum fall on the object?

    Parameters
    ----------
    maps : ndarray
        N x H x W maps (or one H x W map).
    boxes : sequence
        Per map, one box or a sequence of boxes ``(row1, col1, row2, col2)``: inclusive pixel
        coordinates of the top-left and bottom-right corners, as HALCON's rectangle1.
    tolerance : float
        A maximum within this Euclidean distance (pixels) of a box still counts (default 15,
        the paper's).

    Returns
    -------
    ndarray of bool, [N]
        Hits; their mean is the pointing accuracy. The maximum is the first one in row-major
        order; a constant map points nowhere and is a miss.

    Raises
    ------
    HOperatorError
        1301 maps not N x H x W; 1302 a box entry per map is missing or a box is not four
        numbers; 1303 tolerance negative or not a number.
    """
    maps = np.asarray(maps)
    if maps.ndim == 2:
        maps = maps[None]
        boxes = [boxes]
    if maps.ndim != 3:
        raise wrong_value(1, f"maps must be N x H x W, got shape {maps.shape}", "pointing_game")
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or tolerance < 0:
        raise wrong_value(3, f"tolerance must be a number >= 0, got {tolerance!r}",
                          "pointing_game")
    if len(boxes) != len(maps):
        raise wrong_value(2, f"{len(boxes)} box entries for {len(maps)} maps", "pointing_game")
    hits = np.zeros(len(maps), bool)
    for index, (heat, entry) in enumerate(zip(maps, boxes, strict=True)):
        if heat.max() == heat.min():
            continue
        row, col = np.unravel_index(np.argmax(heat), heat.shape)
        hits[index] = any(_distance(row, col, box) <= tolerance for box in _box_list(entry))
    return hits


def blur(images: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Blur images with a Gaussian, the insertion metric's default baseline.

    Parameters
    ----------
    images : ndarray, N x H x W x C
    sigma : float
        Standard deviation in pixels (default 5); the kernel is truncated at 3 sigma and the
        borders are replicated.

    Returns
    -------
    ndarray, float32, N x H x W x C
    """
    radius = max(1, int(np.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    out = images.astype(np.float64)
    for axis in (1, 2):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(4)],
                        mode="edge")
        size = out.shape[axis]
        out = sum(weight * np.take(padded, np.arange(size) + shift, axis=axis)
                  for shift, weight in enumerate(kernel))
    return out.astype(np.float32)


# --- internals -------------------------------------------------------------------------------

def _curve(model, images, maps, targets, steps, baseline, score, chunk, which):
    handle, batch, params, maps, indices = _inputs(model, images, maps, targets, which)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise wrong_value(5, f"steps must be an integer >= 1, got {steps!r}", which)
    _check_score(score, 7, which)
    if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 1:
        raise wrong_value(8, f"chunk must be an integer >= 1, got {chunk!r}", which)
    base = _baseline(baseline, batch, which)
    count, height, width, _ = batch.shape
    pixels = height * width
    counts = (np.arange(steps + 1) * pixels) // steps
    order = np.argsort(-maps.reshape(count, -1), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(pixels)[None].repeat(count, 0), axis=1)
    scores = np.empty((count, steps + 1), np.float32)
    if indices is None:
        top = forward_scores(handle, batch, params, "probability", chunk)
        indices = top.argmax(axis=1)
    for n in range(count):
        # changed[k, pixel]: pixel is among the counts[k] most salient
        changed = ranks[n][None, :] < counts[:, None]
        changed = changed.reshape(steps + 1, height, width, 1)
        start, end = (batch[n], base[n]) if which == "deletion" else (base[n], batch[n])
        perturbed = np.where(changed, end[None], start[None])
        scores[n] = forward_scores(handle, perturbed, params, score, chunk)[:, indices[n]]
    return PerturbationCurve(counts / pixels, scores, auc(scores), indices)


def _inputs(model, images, maps, targets, operator):
    handle, params, batch = prepare(model, images, operator)
    maps = _maps(maps, batch.shape[:3], operator)
    indices = target_indices(targets, params, len(batch), operator)
    if indices is not None:
        if indices.shape[1] != 1:
            raise wrong_count(4, "one target class per image", operator)
        indices = indices[:, 0]
    return handle, batch, params, maps, indices


def _maps(maps: Any, shape: tuple, operator: str) -> np.ndarray:
    if not isinstance(maps, np.ndarray):
        raise wrong_type(3, f"maps must be a numpy array, got {type(maps).__name__}", operator)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.shape != shape:
        raise wrong_value(3, f"maps of shape {maps.shape} do not match the images' N x H x W "
                          f"{shape}", operator)
    if not np.issubdtype(maps.dtype, np.number) or not np.isfinite(maps).all():
        raise wrong_value(3, "maps must be real and finite", operator)
    return maps.astype(np.float32)


def _check_score(score: str, position: int, operator: str) -> None:
    if score not in SCORES:
        raise wrong_value(position, f"score must be one of {SCORES}, got {score!r}", operator)


def _top_or(indices: np.ndarray | None, scores: np.ndarray) -> np.ndarray:
    return scores.argmax(axis=1) if indices is None else indices


def _baseline(baseline: Any, images: np.ndarray, operator: str) -> np.ndarray:
    if isinstance(baseline, str):
        if baseline == "zeros":
            return np.zeros_like(images)
        if baseline == "blur":
            return blur(images)
        if baseline == "mean":
            return np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape)
        raise wrong_value(6, f"baseline must be one of {BASELINES}, a number or an array, "
                          f"got {baseline!r}", operator)
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        return np.full_like(images, float(baseline))
    if isinstance(baseline, np.ndarray) and baseline.shape == images.shape:
        return baseline.astype(np.float32)
    raise wrong_value(6, "baseline must be a name, a number or an array shaped like the images",
                      operator)


def _box_list(entry: Any) -> list[tuple[float, float, float, float]]:
    array = np.asarray(entry, dtype=np.float64)
    if array.ndim == 1 and array.shape == (4,):
        return [tuple(array)]
    if array.ndim == 2 and array.shape[1] == 4:
        return [tuple(row) for row in array]
    raise wrong_value(2, f"a box is (row1, col1, row2, col2); got {entry!r}", "pointing_game")


def _distance(row: int, col: int, box: tuple) -> float:
    row1, col1, row2, col2 = box
    d_row = max(row1 - row, 0, row - row2)
    d_col = max(col1 - col, 0, col - col2)
    return float(np.hypot(d_row, d_col))
