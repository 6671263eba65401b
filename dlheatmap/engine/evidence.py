"""What a method asks of the engine (:class:`Needs`) and what the engine hands back
(:class:`Evidence`), plus the classes to explain (:class:`Targets`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import numpy as np

SCORES = ("logit", "probability")


def top_classes(probabilities: np.ndarray) -> np.ndarray:
    """Each sample's top class: the highest confidence, and among equal confidences the first
    class in the model's output order. apply_dl_model's ordering (a stable sort), the heatmap
    operators, explain, the CLI and the display all follow this one rule."""
    return probabilities.argmax(axis=1)


@dataclass(frozen=True, eq=False)  # eq would compare index arrays element-wise
class Targets:
    """The classes whose scores are explained, as indices into the model's output.

    Parameters
    ----------
    indices : ndarray of int, optional
        None: each sample's top class (:func:`top_classes`). [T]: the same T classes for
        every sample. [N, T]: T classes per sample, one row per sample of the call.
    """

    indices: np.ndarray | None = None

    @classmethod
    def fixed(cls, index: int) -> Targets:
        """The same class index for every sample."""
        return cls(np.array([index]))

    @property
    def per_sample(self) -> int:
        """How many classes each sample is explained for (T)."""
        return 1 if self.indices is None else int(np.shape(self.indices)[-1])

    def __call__(self, probabilities: np.ndarray, start: int = 0) -> np.ndarray:
        """Class indices [n, T] for the batch of ``n`` samples that starts at sample ``start``.

        Rows past the call's last sample (a padded fixed-size batch) get class 0.
        """
        if self.indices is None:
            return top_classes(probabilities)[:, None]
        return self.rows(start, len(probabilities), fill=0)

    def rows(self, start: int, count: int, fill: int) -> np.ndarray:
        """The requested indices [count, T] of samples ``start`` on; ``fill`` past the end."""
        indices = np.asarray(self.indices, dtype=np.int64)
        if indices.ndim == 1:
            return np.repeat(indices[None], count, axis=0)
        rows = indices[start : start + count]
        missing = count - len(rows)
        return np.pad(rows, ((0, missing), (0, 0)), constant_values=fill) if missing else rows


TOP_CLASS = Targets()


@dataclass(frozen=True)
class Needs:
    """What a method needs from the engine, declared once per method class.

    Attributes
    ----------
    activations : bool
        The layer's activation [N, C, h, w].
    gradients : bool
        d score / d activation at the layer, per target.
    input_gradients : {None, 'plain', 'guided'}
        d score / d image per target, plain or through guided ReLUs.
    forward : bool
        Class scores of further images (Score-CAM's masked images): ``Evidence.scores``.
    grad_cam_map : bool
        The Grad-CAM map (the gradients' spatial mean times the activation) will do instead of
        the activation and its gradient, where the engine computes it itself.
    """

    activations: bool = False
    gradients: bool = False
    input_gradients: str | None = None
    forward: bool = False
    grad_cam_map: bool = False

    @property
    def layer(self) -> bool:
        """Whether a layer is involved at all."""
        return self.activations or self.gradients or self.grad_cam_map

    @property
    def differentiates(self) -> bool:
        return self.gradients or self.grad_cam_map or self.input_gradients is not None


# Fields holding per-sample arrays along the given axis (None where not computed).
_SAMPLES = {"batch_axis": 0}
_SAMPLES_AFTER_TARGETS = {"batch_axis": 1}


ScoreFunction = Callable[[np.ndarray, int | None], np.ndarray]


@dataclass
class Evidence:
    """What one engine pass over a batch yields; fields the method did not need are None.

    Attributes
    ----------
    probabilities : ndarray, [N, classes]
        As apply_dl_model reports them.
    targets : ndarray of int, [N, T]
        The class indices explained.
    activations : ndarray, [N, C, h, w]
    gradients : ndarray, [T, N, C, h, w]
        d score(target) / d activation, one entry per target column.
    input_gradients : ndarray, [T, N, H, W, C]
        d score / d image (guided or plain), in HALCON layout.
    cam_maps : ndarray, [N, T, h, w]
        Grad-CAM maps the engine computed itself (``Needs.grad_cam_map``), before any ReLU.
    heatmaps : ndarray, [N, T, H, W]
        Those maps resized to the images and normalised, where the caller asked the engine
        to do that too.
    images : ndarray, [N, H, W, C]
        The images (for methods that run further forward passes).
    scores : callable
        ``scores(images, chunk)``: class scores [M, classes] of further images.
    """

    probabilities: np.ndarray = field(default=None, metadata=_SAMPLES)
    targets: np.ndarray = field(default=None, metadata=_SAMPLES)
    activations: np.ndarray | None = field(default=None, metadata=_SAMPLES)
    gradients: np.ndarray | None = field(default=None, metadata=_SAMPLES_AFTER_TARGETS)
    input_gradients: np.ndarray | None = field(default=None, metadata=_SAMPLES_AFTER_TARGETS)
    cam_maps: np.ndarray | None = field(default=None, metadata=_SAMPLES)
    heatmaps: np.ndarray | None = field(default=None, metadata=_SAMPLES)
    images: np.ndarray | None = field(default=None, metadata=_SAMPLES)
    scores: ScoreFunction | None = None

    def trimmed(self, count: int) -> Evidence:
        """The first ``count`` samples (a padded batch's real ones)."""
        return replace(self, **{name: _take(value, axis, slice(0, count))
                                for name, value, axis in self._arrays()})

    @classmethod
    def concatenate(cls, parts: list[Evidence]) -> Evidence:
        """The batches' evidence as one."""
        if len(parts) == 1:  # one batch: nothing to copy
            return parts[0]
        first = parts[0]
        joined = {name: None if value is None else np.concatenate(
            [getattr(part, name) for part in parts], axis=axis)
            for name, value, axis in first._arrays()}
        return replace(first, **joined)

    def _arrays(self):
        for spec in fields(self):
            if "batch_axis" in spec.metadata:
                yield spec.name, getattr(self, spec.name), spec.metadata["batch_axis"]


def _take(array, axis: int, index: slice):
    if array is None:
        return None
    return array[index] if axis == 0 else array[:, index]
