"""LayerCAM (Jiang et al., IEEE TIP 2021)."""

from __future__ import annotations

import numpy as np

from dlheatmap.methods.base import CAMMethod, register


@register
class LayerCAM(CAMMethod):
    """Map = sum over channels of ReLU(gradient) x activation, position by position."""

    name = "layer_cam"
    title = "LayerCAM"

    def map(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        return (np.maximum(gradients, 0) * activations).sum(axis=1, dtype=np.float32)
