"""XGrad-CAM (Fu et al., BMVC 2020)."""

from __future__ import annotations

import numpy as np

from dlheatmap.methods.base import CAMMethod, register, safe_divide


@register
class XGradCAM(CAMMethod):
    """Channel weight = sum over positions of (A_ij / sum_ab A_ab) x g_ij.

    A channel whose activations sum to 0 gets weight 0 (no epsilon is added).
    """

    name = "xgrad_cam"
    title = "XGrad-CAM"

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        weighted = (activations.astype(np.float64) * gradients).sum(axis=(2, 3))
        total = activations.sum(axis=(2, 3), dtype=np.float64)
        return safe_divide(weighted, total)
