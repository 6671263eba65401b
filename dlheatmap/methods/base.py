"""The base classes of explanation methods and the registries that name them.

Every method declares, as class attributes, what it needs (a layer's activations, the
gradients at that layer, gradients with respect to the input image, extra forward passes) and
what it returns (``kind``: 'map', one H x W map per target, or 'image', H x W x C). The shared
machinery that runs the model lives in :mod:`dlheatmap.explain`; a method states its formula
only.

A CAM method turns a layer's activations A [N, C, h, w] and the gradients dS/dA of a class score
into a map [N, h, w] at the layer's resolution, usually through per-channel weights (torchcam
style).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

CAM_METHODS: dict[str, type[CAMMethod]] = {}
METHODS: dict[str, type[Method]] = {}

KINDS = ("map", "image")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``.

    Every method goes into ``METHODS``; class-activation-map methods also into ``CAM_METHODS``.
    """
    if cls.kind not in KINDS:
        raise ValueError(f"{cls.__name__}.kind must be one of {KINDS}, got {cls.kind!r}")
    METHODS[cls.name] = cls
    if issubclass(cls, CAMMethod):
        CAM_METHODS[cls.name] = cls
    return cls


class Method:
    """What an explanation method needs and returns (class attributes only)."""

    name: ClassVar[str]
    #: The name people know the method by, for legends ("Grad-CAM++", "Score-CAM").
    title: ClassVar[str]
    #: 'map': one H x W map per target; 'image': an H x W x C image per target.
    kind: ClassVar[str] = "map"
    #: Works on a layer's activations (the ``layer`` argument of ``explain`` applies).
    uses_layer: ClassVar[bool] = True
    #: Needs d score / d activation at the layer.
    needs_gradients: ClassVar[bool] = True
    #: Needs gradients with respect to the input image: None, 'plain' or 'guided'.
    input_gradients: ClassVar[str | None] = None
    #: Needs forward passes of perturbed images (Score-CAM).
    needs_forward: ClassVar[bool] = False
    #: The class score used unless the caller chooses: 'logit' or 'probability'.
    default_score: ClassVar[str] = "logit"
    #: The normalisation used unless the caller chooses (see ``postprocess.NORMALIZATIONS``).
    default_normalize: ClassVar[str] = "max"
    #: Class-agnostic methods give the same map for every target.
    class_specific: ClassVar[bool] = True


class CAMMethod(Method):
    """Map = sum over channels of weight(channel) x activation(channel)."""

    def __call__(self, activations: np.ndarray, gradients: np.ndarray | None) -> np.ndarray:
        weights = self.channel_weights(activations, gradients).astype(np.float32, copy=False)
        # einsum's own loops: no C x h x w temporary, and no BLAS call (see spatial_mean)
        return np.einsum("nc,nchw->nhw", weights, activations).astype(np.float32, copy=False)

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray | None) -> np.ndarray:
        """Per-sample, per-channel weights [N, C]."""
        raise NotImplementedError


def spatial_mean(tensor: np.ndarray) -> np.ndarray:
    """The mean of an [N, C, h, w] tensor over h and w, [N, C] float32.

    A reduction over one contiguous axis, deliberately not a BLAS product with a vector of
    1 / (h w): BLAS would be faster alone, but its worker threads keep spinning after the call
    and slowed the next onnxruntime run by a third (ResNet-50, batch 8, 2 cores).
    """
    n, c, h, w = tensor.shape
    sums = tensor.reshape(n, c, h * w).sum(axis=2, dtype=np.float32)
    return sums * np.float32(1.0 / (h * w))


def safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, and 0 where the denominator is 0 (never NaN or Inf)."""
    nonzero = denominator != 0
    return np.where(nonzero, numerator / np.where(nonzero, denominator, 1), 0).astype(np.float32)
