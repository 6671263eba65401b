"""A heatmap drawn over its image the way the Keras Grad-CAM tutorial draws it.

The recipe: quantise the [0, 1] heatmap to 256 levels, colour it with the jet colour map,
stretch the coloured map to 0..255, resize it to the image (bicubic), add ``alpha`` times it
to the 0..255 image, and stretch the sum to 0..255 again.
"""

from __future__ import annotations

import numpy as np

# The jet colour map as piecewise-linear ramps per channel: (position, value) knots.
_JET = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}


def jet(values: np.ndarray) -> np.ndarray:
    """RGB colours in [0, 1] (shape ``values.shape + (3,)``) of values in [0, 1]."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    channels = []
    for colour in ("red", "green", "blue"):
        knots = np.array(_JET[colour])
        channels.append(np.interp(values, knots[:, 0], knots[:, 1]))
    return np.stack(channels, axis=-1)


def jet_lut(levels: int = 256) -> np.ndarray:
    """The jet colour map sampled at ``levels`` equally spaced points, [levels, 3]."""
    return jet(np.linspace(0.0, 1.0, levels))


def jet_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The Keras tutorial's superimposed image, uint8 H x W x 3.

    Parameters
    ----------
    image : ndarray
        H x W x 3 (or H x W x 1, H x W: grey, repeated to RGB) with values in 0..255.
    heatmap : ndarray
        h x w in [0, 1] (values outside are clipped), any size: it is resized to the image
        after colouring, as the tutorial does, so a layer-resolution map can be passed.
    alpha : float
        Weight of the coloured heatmap added to the image.
    """
    from PIL import Image

    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    levels = (255 * np.clip(heatmap, 0.0, 1.0)).astype(np.uint8)
    coloured = _stretch_to_bytes(jet_lut()[levels])
    height, width = image.shape[:2]
    if coloured.shape[:2] != (height, width):
        coloured = np.asarray(Image.fromarray(coloured, "RGB").resize(
            (width, height), Image.Resampling.BICUBIC))
    return _stretch_to_bytes(coloured.astype(np.float32) * alpha + image)


def _stretch_to_bytes(values: np.ndarray) -> np.ndarray:
    """Min-max stretch to 0..255 and truncate to uint8 (Keras' array_to_img with scaling)."""
    values = values.astype(np.float64) - values.min()
    peak = values.max()
    if peak != 0:
        values = values / peak
    return (values * 255).astype(np.uint8)
