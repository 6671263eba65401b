"""Eigen-CAM (Muhammad and Yeasin, IJCNN 2020)."""

from __future__ import annotations

import numpy as np

from dlheatmap.engine.evidence import Needs
from dlheatmap.methods.base import CAMMethod, register


@register
class EigenCAM(CAMMethod):
    """Map = projection of the activations onto their first principal direction.

    The activations of one sample form a matrix of h*w rows (positions) and C columns
    (channels); the map is that matrix times its first right singular vector. No gradients and
    no class: every target gets the same map.

    Parameters
    ----------
    centre : bool
        Subtract each channel's mean over the positions first (what pytorch-grad-cam does).
        The paper projects the activations as they are (the default).

    Notes
    -----
    A singular vector's sign is arbitrary. dlheatmap picks the sign that makes the map's dot
    product with the channel sum of the activations non-negative: for non-negative, uncentred
    activations (after a ReLU) that is the non-negative map; for centred activations it is the
    map that correlates positively with the activation energy.
    """

    name = "eigen_cam"
    title = "Eigen-CAM"
    needs = Needs(activations=True)
    class_specific = False

    def __init__(self, centre: bool = False):
        self.centre = centre

    def map(self, activations: np.ndarray, gradients: np.ndarray | None = None) -> np.ndarray:
        count, channels, height, width = activations.shape
        matrices = activations.reshape(count, channels, -1).transpose(0, 2, 1).astype(np.float64)
        if self.centre:
            matrices = matrices - matrices.mean(axis=1, keepdims=True)
        projections = _first_components(matrices)  # [N, positions]
        energy = activations.sum(axis=1, dtype=np.float64).reshape(count, -1)
        flip = np.einsum("np,np->n", projections, energy) < 0
        projections[flip] *= -1
        return projections.reshape(count, height, width).astype(np.float32)


def _first_components(matrices: np.ndarray) -> np.ndarray:
    """matrix @ v1 for each matrix (positions x channels) and its first right singular vector
    v1 (= sigma1 u1), from the eigen-decomposition of the smaller Gram matrix (channels x
    channels or positions x positions), batched over the samples."""
    positions, channels = matrices.shape[1:]
    if channels <= positions:
        _, vectors = np.linalg.eigh(matrices.transpose(0, 2, 1) @ matrices)
        return np.einsum("npc,nc->np", matrices, vectors[:, :, -1])
    values, vectors = np.linalg.eigh(matrices @ matrices.transpose(0, 2, 1))
    return np.sqrt(np.maximum(values[:, -1:], 0.0)) * vectors[:, :, -1]
