"""From a layer-resolution map to a heatmap: bilinear upsampling and HALCON's scalings."""

from __future__ import annotations

import numpy as np

SCALINGS = ("scale_after_relu", "scale_before_relu", "none")


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize [N, h, w] maps bilinearly to [N, height, width].

    Half-pixel centres (``align_corners=False``), the convention of PyTorch, OpenCV and the
    Grad-CAM peers; the border is extended, not zero-padded.
    """
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)
    return resized[:, 0].numpy()


def scale(maps: np.ndarray, scaling: str) -> np.ndarray:
    """Apply HALCON's GenParam 'scaling' per map.

    'scale_after_relu': negatives to 0, then divide by the maximum.
    'scale_before_relu': divide by the maximum absolute value, then negatives to 0.
    'none': negatives to 0 only.
    A map with nothing to scale by (all values <= 0, or all zero) stays all zero: never NaN.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    maps = maps.astype(np.float32, copy=True)
    if scaling == "scale_before_relu":
        maps = _divide_per_map(maps, np.abs(maps).max(axis=(1, 2)))
    np.maximum(maps, 0.0, out=maps)
    if scaling == "scale_after_relu":
        maps = _divide_per_map(maps, maps.max(axis=(1, 2)))
    return maps


def _divide_per_map(maps: np.ndarray, divisors: np.ndarray) -> np.ndarray:
    safe = np.where(divisors > 0, divisors, 1.0).astype(np.float32)
    return maps / safe[:, None, None]


# --- normalisations of the Pythonic API (dlheatmap.explain) -------------------------------

NORMALIZATIONS = ("max", "minmax", "abs_max", "relu", "none")


def normalize(maps: np.ndarray, mode: str, eps: float = 0.0, item_ndim: int = 2) -> np.ndarray:
    """Normalise each map (the last ``item_ndim`` axes) of ``maps`` on its own.

    'max': negatives to 0, then divide by the maximum (the Keras tutorial, eli5, HALCON's
    'scale_after_relu'). 'minmax': subtract the minimum, divide by maximum - minimum (AUCMEDI).
    'abs_max': divide by the maximum absolute value, keeping signs. 'relu': negatives to 0.
    'none': unchanged. ``eps`` is added to the divisor (AUCMEDI uses 1e-8, eli5 1e-7); a map
    whose divisor is still 0 becomes all zero, never NaN. Returns float32.
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
    elif mode == "abs_max":
        flat = _divide_rows(flat, np.abs(flat).max(axis=1) + eps)
    return flat.reshape(maps.shape)


def _divide_rows(rows: np.ndarray, divisors: np.ndarray) -> np.ndarray:
    divisors = divisors.astype(np.float32)
    keep = divisors > 0
    safe = np.where(keep, divisors, 1.0).astype(np.float32)
    return np.where(keep[:, None], rows / safe[:, None], 0.0).astype(np.float32)
