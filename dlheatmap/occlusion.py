"""The confidence-based heatmap: how much the target class's confidence drops where a square
hides the image (occlusion), the Pythonic core behind gen_dl_model_classification_heatmap.

A square of ``feature_size`` pixels is moved over the image in steps of ``sampling_size``
(rows and columns alike), the last position of each axis placed against the border so that
every pixel is covered. Each occluded copy of the image has the square filled with the image's
own mean grey value per channel, so the square adds no evidence of its own. The deviation of a
position is the target class's confidence on the original image minus that on the occluded
copy (positive: the square hid evidence for the class). Each deviation belongs to its square's
centre; a pixel's value is interpolated linearly between the nearest centres (rows, then
columns; constant beyond the outermost centres), negatives set to 0, divided by the largest
value of the image (all zero when no square lowers the confidence). The maximum deviation is
the largest deviation of any position. The decisions are in spec/decisions.md ("The confidence-based
heatmap").

All occluded images of a call are built with numpy indexing, chunk by chunk, and go through
onnxruntime in batches (:func:`dlheatmap.engine.forward_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlheatmap.engine import forward_scores
from dlheatmap.model import Model
from dlheatmap.params import ModelParams

#: occluded images built at once (bounded in bytes: ``CHUNK_BYTES``)
CHUNK_BYTES = 64 * 2**20
#: images per onnxruntime run for graphs with a dynamic batch dimension
RUN_BATCH = 64


@dataclass(frozen=True)
class OcclusionResult:
    """Confidence-based heatmaps of a batch.

    Attributes
    ----------
    probabilities : ndarray, float32, [N, classes]
        The unoccluded images' confidences.
    targets : ndarray, int64, [N]
        The class index explained for each image.
    heatmaps : ndarray, float32, [N, H, W]
        In [0, 1]; 1 where hiding the image lowers the target's confidence most.
    deviations : ndarray, float32, [N, rows, cols]
        The confidence drop of every square position (row-major positions).
    max_deviation : ndarray, float64, [N]
        The largest deviation of each image (negative if every square raised the confidence).
    """

    probabilities: np.ndarray
    targets: np.ndarray
    heatmaps: np.ndarray
    deviations: np.ndarray
    max_deviation: np.ndarray


def square_starts(length: int, feature_size: int, sampling_size: int) -> np.ndarray:
    """First pixels of the square along an axis of ``length`` pixels: 0, s, 2 s, ... and the
    position against the far border; a square longer than the axis covers it once."""
    size = min(feature_size, length)
    last = length - size
    starts = np.arange(0, last + 1, sampling_size)
    return starts if starts[-1] == last else np.append(starts, last)


def coverage(starts: np.ndarray, feature_size: int, length: int) -> np.ndarray:
    """[positions, length] bool: which pixels of the axis each square position covers."""
    pixels = np.arange(length)
    return (pixels >= starts[:, None]) & (pixels < starts[:, None] + feature_size)


def occlusion(
    model: Model,
    images: np.ndarray,
    targets: np.ndarray,
    feature_size: int,
    sampling_size: int,
    params: ModelParams,
) -> OcclusionResult:
    """Confidence-based heatmaps of validated images.

    Parameters
    ----------
    model : Model
    images : ndarray
        N x H x W x C float32 images in HALCON layout, already validated.
    targets : ndarray of int
        [N] class indices (into the model's output) to explain.
    feature_size, sampling_size : int
        The square's side and its step, in pixels (both >= 1).
    params : ModelParams
        The call's parameters.

    Returns
    -------
    OcclusionResult
    """
    count, height, width, _ = images.shape
    targets = np.asarray(targets, np.int64)
    row_starts = square_starts(height, feature_size, sampling_size)
    col_starts = square_starts(width, feature_size, sampling_size)
    rows = coverage(row_starts, feature_size, height)
    cols = coverage(col_starts, feature_size, width)
    probabilities = forward_scores(model, images, params, "probability", RUN_BATCH)
    baseline = probabilities[np.arange(count), targets]
    occluded = _occluded_confidences(model, images, targets, rows, cols, params)
    deviations = (baseline[:, None] - occluded).reshape(count, len(rows), len(cols))
    heatmaps = (centre_weights(row_starts, feature_size, height) @ deviations
                @ centre_weights(col_starts, feature_size, width).T)
    np.clip(heatmaps, 0.0, None, out=heatmaps)
    peaks = heatmaps.reshape(count, -1).max(axis=1)
    heatmaps /= np.where(peaks > 0, peaks, 1.0)[:, None, None]
    return OcclusionResult(probabilities, targets, heatmaps.astype(np.float32),
                           deviations.astype(np.float32),
                           deviations.reshape(count, -1).max(axis=1).astype(np.float64))


def _occluded_confidences(model: Model, images: np.ndarray, targets: np.ndarray,
                          rows: np.ndarray, cols: np.ndarray, params: ModelParams) -> np.ndarray:
    """[N, positions] target confidences of every occluded copy, built and run chunk by chunk
    over the flat (image, position) pairs."""
    count = len(images)
    positions = len(rows) * len(cols)
    fill = images.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)  # [N, C]
    chunk = max(1, CHUNK_BYTES // images[0].nbytes)
    confidences = np.empty(count * positions, np.float32)
    for start in range(0, count * positions, chunk):
        pairs = np.arange(start, min(start + chunk, count * positions))
        image, position = np.divmod(pairs, positions)
        row, col = np.divmod(position, len(cols))
        square = rows[row][:, :, None] & cols[col][:, None, :]  # [k, H, W]
        batch = np.where(square[..., None], fill[image][:, None, None, :], images[image])
        scores = forward_scores(model, batch, params, "probability", RUN_BATCH)
        confidences[pairs] = scores[np.arange(len(pairs)), targets[image]]
    return confidences.reshape(count, positions)


def centre_weights(starts: np.ndarray, feature_size: int, length: int) -> np.ndarray:
    """[length, positions] float32: linear interpolation between the squares' centres along an
    axis (each row sums to 1), constant beyond the first and last centre."""
    size = min(feature_size, length)
    centres = starts + (size - 1) / 2.0
    pixels = np.arange(length, dtype=np.float64)
    basis = np.eye(len(starts))
    return np.stack([np.interp(pixels, centres, column) for column in basis],
                    axis=1).astype(np.float32)
