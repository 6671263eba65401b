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
