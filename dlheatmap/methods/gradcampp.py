"""Grad-CAM++ (Chattopadhay et al., WACV 2018)."""

from __future__ import annotations

import numpy as np

from dlheatmap.methods.base import CAMMethod, register, safe_divide


@register
class GradCAMPlusPlus(CAMMethod):
    """Channel weight = sum over positions of alpha x ReLU(gradient).

    alpha_ij = g_ij^2 / (2 g_ij^2 + sum_ab A_ab g_ij^3), the closed form of the paper's
    equation 19 (the score's exponential only scales every weight of a class by the same
    factor and is left out). Where the denominator is 0, alpha is 0; no epsilon is added.
    """

    name = "grad_cam_plus_plus"
    title = "Grad-CAM++"

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        g = gradients.astype(np.float64)
        g2 = g * g
        total = activations.sum(axis=(2, 3), dtype=np.float64)[:, :, None, None]
        alpha = safe_divide(g2, 2 * g2 + total * g2 * g)
        return (alpha * np.maximum(g, 0)).sum(axis=(2, 3), dtype=np.float32)
