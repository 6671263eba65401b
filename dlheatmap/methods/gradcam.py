"""Grad-CAM (Selvaraju et al., ICCV 2017)."""

from __future__ import annotations

import numpy as np

from dlheatmap.methods.base import CAMMethod, register


@register
class GradCAM(CAMMethod):
    """Channel weight = gradient averaged over the layer's height and width."""

    name = "grad_cam"

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        return gradients.mean(axis=(2, 3), dtype=np.float32)
