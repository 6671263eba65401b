"""The base classes of explanation methods and the registries that name them.

Every method declares what it needs from the engine (``needs``, a
:class:`dlheatmap.engine.Needs`) and what it returns (``kind``: 'map', one H x W map per
target, or 'image', H x W x C). Its one entry point is :meth:`Method.compute`, which turns the
engine's :class:`~dlheatmap.engine.Evidence` into heatmaps [N, T, ...]; the machinery that
gathers the evidence lives in :mod:`dlheatmap.engine`, so a method states its formula only.

A CAM method turns a layer's activations A [N, C, h, w] and the gradients dS/dA of a class score
into a map [N, h, w] at the layer's resolution, usually through per-channel weights (torchcam
style).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from dlheatmap.engine.evidence import Evidence, Needs

CAM_METHODS: dict[str, type[CAMMethod]] = {}
METHODS: dict[str, type[Method]] = {}

KINDS = ("map", "image")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``.

    Every method goes into ``METHODS``; class-activation-map methods also into ``CAM_METHODS``.
    A name can be registered once.
    """
    if cls.kind not in KINDS:
        raise ValueError(f"{cls.__name__}.kind must be one of {KINDS}, got {cls.kind!r}")
    if cls.name in METHODS:
        raise ValueError(f"a method named {cls.name!r} is registered already")
    METHODS[cls.name] = cls
    if issubclass(cls, CAMMethod):
        CAM_METHODS[cls.name] = cls
    return cls


class Method:
    """An explanation method: its declared needs and :meth:`compute`."""

    name: ClassVar[str]
    #: The name people know the method by, for legends ("Grad-CAM++", "Score-CAM").
    title: ClassVar[str]
    #: 'map': one H x W map per target; 'image': an H x W x C image per target.
    kind: ClassVar[str] = "map"
    #: What the engine must compute for it.
    needs: ClassVar[Needs] = Needs()
    #: The maps come at the layer's resolution (upsampled afterwards) rather than the image's.
    at_layer_resolution: ClassVar[bool] = False
    #: The class score used unless the caller chooses: 'logit' or 'probability'.
    default_score: ClassVar[str] = "logit"
    #: The normalisation used unless the caller chooses (see ``postprocess.NORMALIZATIONS``).
    default_normalize: ClassVar[str] = "max"

    @classmethod
    def uses_layer(cls) -> bool:
        """Whether the method works on a layer (the ``layer`` argument of ``explain``)."""
        return cls.needs.layer

    def compute(self, evidence: Evidence) -> np.ndarray:
        """Heatmaps [N, T, ...] from the engine's evidence."""
        raise NotImplementedError


class CAMMethod(Method):
    """Map = sum over channels of weight(channel) x activation(channel)."""

    needs = Needs(activations=True, gradients=True)
    at_layer_resolution = True
    #: False for class-agnostic methods: one map serves every target.
    class_specific: ClassVar[bool] = True

    def compute(self, evidence: Evidence) -> np.ndarray:
        """Maps [N, T, h, w] at the layer's resolution, before any ReLU."""
        if not self.class_specific:
            single = self.map(evidence.activations, None)
            return np.repeat(single[:, None], evidence.targets.shape[1], axis=1)
        return np.stack([self.map(evidence.activations, grads)
                         for grads in evidence.gradients], axis=1)

    def map(self, activations: np.ndarray, gradients: np.ndarray | None) -> np.ndarray:
        """The formula: maps [N, h, w] from activations [N, C, h, w] and one target's
        gradients (None for methods that use none)."""
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
