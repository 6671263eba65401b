"""HiResCAM (Draelos and Carin, 2020)."""

from __future__ import annotations

import numpy as np

from dlheatmap.methods.base import CAMMethod, register


@register
class HiResCAM(CAMMethod):
    """Map = sum over channels of gradient x activation, position by position.

    Unlike Grad-CAM the gradients are not averaged, so for a model that ends in global average
    pooling and a dense layer the map sums exactly to the class score minus its bias.
    """

    name = "hires_cam"
    title = "HiResCAM"

    def map(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        return (gradients * activations).sum(axis=1, dtype=np.float32)
