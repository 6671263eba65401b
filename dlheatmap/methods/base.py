"""The base class of class-activation-map methods.

A CAM method turns a layer's activations A [N, C, h, w] and the gradients dS/dA of a class score
into a map [N, h, w] at the layer's resolution. The shared machinery (running the model,
choosing targets, upsampling, scaling) lives outside; a subclass states its formula only,
usually as per-channel weights.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

CAM_METHODS: dict[str, type[CAMMethod]] = {}


def register(cls: type[CAMMethod]) -> type[CAMMethod]:
    """Class decorator: make a method available by its ``name``."""
    CAM_METHODS[cls.name] = cls
    return cls


class CAMMethod:
    """Map = sum over channels of weight(channel) x activation(channel)."""

    name: ClassVar[str]
    needs_gradients: ClassVar[bool] = True

    def __call__(self, activations: np.ndarray, gradients: np.ndarray | None) -> np.ndarray:
        weights = self.channel_weights(activations, gradients)
        return (weights[:, :, None, None] * activations).sum(axis=1, dtype=np.float32)

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray | None) -> np.ndarray:
        """Per-sample, per-channel weights [N, C]."""
        raise NotImplementedError
