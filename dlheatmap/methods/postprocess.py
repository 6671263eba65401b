"""From a layer-resolution map to a heatmap: bilinear upsampling and HALCON's scalings."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# HALCON's GenParam 'scaling' in the normalisations' own terms: one vocabulary for both
# surfaces (and for the graph's heatmap head).
HALCON_SCALINGS = {"scale_after_relu": "max", "scale_before_relu": "abs_max_relu",
                   "none": "relu"}
SCALINGS = tuple(HALCON_SCALINGS)


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize [N, h, w] maps bilinearly to [N, height, width] (float32).

    Half-pixel centres (``align_corners=False``), the convention of PyTorch, OpenCV and the
    Grad-CAM peers; the border is extended, not zero-padded. Bilinear interpolation is
    separable: columns first, then rows, each a blend of two neighbours. (Written with numpy's
    own loops rather than as products with interpolation matrices: BLAS threads keep spinning
    after a call and slow the onnxruntime run that follows, see ``spatial_mean``.)
    """
    maps = np.asarray(maps, dtype=np.float32)
    # columns first, on the small map; then whole rows are blended, which copies contiguously
    low, high, weight = _neighbours(maps.shape[-1], width)
    columns = maps[..., low] * (1 - weight) + maps[..., high] * weight
    low, high, weight = _neighbours(maps.shape[-2], height)
    out = columns[..., low, :]
    out *= (1 - weight)[:, None]
    upper = columns[..., high, :]
    upper *= weight[:, None]
    out += upper
    return out


@lru_cache(maxsize=64)
def _neighbours(size: int, new_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``new_size`` output positions: the two input positions it lies between
    and the weight of the second, with half-pixel centres and the border extended."""
    centres = (np.arange(new_size) + 0.5) * (size / new_size) - 0.5
    centres = np.clip(centres, 0, size - 1)
    low = np.floor(centres).astype(np.intp)
    high = np.minimum(low + 1, size - 1)
    weight = (centres - low).astype(np.float32)
    for array in (low, high, weight):
        array.setflags(write=False)
    return low, high, weight


# --- normalisations ---------------------------------------------------------------------

NORMALIZATIONS = ("max", "minmax", "abs_max", "abs_max_relu", "relu", "none")


def normalize(maps: np.ndarray, mode: str, eps: float = 0.0, item_ndim: int = 2) -> np.ndarray:
    """Normalise each map (the last ``item_ndim`` axes) of ``maps`` on its own.

    'max': negatives to 0, then divide by the maximum (the Keras tutorial, eli5, HALCON's
    'scale_after_relu'). 'minmax': subtract the minimum, divide by maximum - minimum (AUCMEDI).
    'abs_max': divide by the maximum absolute value, keeping signs. 'abs_max_relu': the same,
    then negatives to 0 (HALCON's 'scale_before_relu'). 'relu': negatives to 0 (HALCON's
    'none'). 'none': unchanged. ``eps`` is added to the divisor (AUCMEDI uses 1e-8, eli5
    1e-7); a map whose divisor is still 0 becomes all zero, never NaN. Returns float32.
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalisation must be one of {NORMALIZATIONS}, got {mode!r}")
    flat = maps.reshape(-1, int(np.prod(maps.shape[maps.ndim - item_ndim:], dtype=np.int64)))
    flat = flat.astype(np.float32, copy=True)
    if mode in ("max", "relu"):
        np.maximum(flat, 0.0, out=flat)
    if mode == "max":
        flat = _divide_rows(flat, flat.max(axis=1) + eps)
    elif mode == "minmax":
        low = flat.min(axis=1)
        flat = _divide_rows(flat - low[:, None], flat.max(axis=1) - low + eps)
    elif mode in ("abs_max", "abs_max_relu"):
        flat = _divide_rows(flat, np.abs(flat).max(axis=1) + eps)
        if mode == "abs_max_relu":
            np.maximum(flat, 0.0, out=flat)
    return flat.reshape(maps.shape)


def _divide_rows(rows: np.ndarray, divisors: np.ndarray) -> np.ndarray:
    divisors = divisors.astype(np.float32)
    keep = divisors > 0
    safe = np.where(keep, divisors, 1.0).astype(np.float32)
    return np.where(keep[:, None], rows / safe[:, None], 0.0).astype(np.float32)
