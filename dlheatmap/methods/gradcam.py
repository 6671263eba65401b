"""Grad-CAM (Selvaraju et al., ICCV 2017)."""

from __future__ import annotations

import numpy as np

from dlheatmap.engine.evidence import Evidence, Needs
from dlheatmap.methods.base import CAMMethod, register, spatial_mean

# Keras' l2_normalize floors the squared norm at this value (eli5 relies on that default).
L2_FLOOR = 1e-12


@register
class GradCAM(CAMMethod):
    """Channel weight = gradient averaged over the layer's height and width.

    Parameters
    ----------
    l2_gradients : bool
        Divide each sample's gradient tensor by its L2 norm (floored at sqrt(1e-12)) before
        averaging, as eli5's Keras Grad-CAM does. It scales a sample's map by a constant, so
        it only matters together with an epsilon in the normalisation.
    """

    name = "grad_cam"
    title = "Grad-CAM"

    # The map alone: the engine may compute it itself, else it returns the activation and its
    # gradients and :meth:`compute` applies the formula.
    needs = Needs(grad_cam_map=True)

    def __init__(self, l2_gradients: bool = False):
        self.l2_gradients = l2_gradients
        if l2_gradients:  # a formula the engine's own Grad-CAM map does not have
            self.needs = Needs(activations=True, gradients=True)

    def compute(self, evidence: Evidence) -> np.ndarray:
        if evidence.cam_maps is not None:  # the engine computed the same formula itself
            return evidence.cam_maps
        return super().compute(evidence)

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        if self.l2_gradients:
            squared = np.square(gradients, dtype=np.float64).sum(axis=(1, 2, 3))
            norms = np.sqrt(np.maximum(squared, L2_FLOOR)).astype(np.float32)
            gradients = gradients / norms[:, None, None, None]
        return spatial_mean(gradients)
