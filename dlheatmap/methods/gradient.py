"""Methods on the gradient with respect to the input image: saliency, guided backpropagation
and Guided Grad-CAM."""

from __future__ import annotations

import numpy as np

from dlheatmap.engine.evidence import Evidence, Needs
from dlheatmap.methods.base import Method, register
from dlheatmap.methods.gradcam import GradCAM
from dlheatmap.methods.postprocess import upsample

REDUCTIONS = ("abs_max", "max")


class InputGradientMethod(Method):
    """A method computed from input gradients [N, H, W, C] (HALCON layout), target by target."""

    needs = Needs(input_gradients="plain")

    def compute(self, evidence: Evidence) -> np.ndarray:
        return np.stack([self.from_gradients(grads) for grads in evidence.input_gradients],
                        axis=1)

    def from_gradients(self, input_gradients: np.ndarray) -> np.ndarray:
        """The formula: one target's heatmaps [N, H, W(, C)] from its input gradients."""
        raise NotImplementedError


@register
class Saliency(InputGradientMethod):
    """Vanilla gradient saliency (Simonyan et al., 2014): d score / d image, one value per
    pixel from the channels.

    Parameters
    ----------
    reduce : {'abs_max', 'max'}
        'abs_max' (default): the maximum absolute value over the channels, as the paper
        defines it. 'max': the plain maximum, signs kept, as AUCMEDI's saliency does (pair it
        with ``normalize='minmax'``).
    """

    name = "saliency"
    title = "Saliency"

    def __init__(self, reduce: str = "abs_max"):
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        self.reduce = reduce

    def from_gradients(self, input_gradients: np.ndarray) -> np.ndarray:
        values = np.abs(input_gradients) if self.reduce == "abs_max" else input_gradients
        return values.max(axis=-1).astype(np.float32)


@register
class GuidedBackprop(InputGradientMethod):
    """Guided backpropagation (Springenberg et al., 2015): the input gradient where every ReLU
    passes back only positive gradients at positive inputs. An image per target."""

    name = "guided_backprop"
    title = "Guided Backprop"
    kind = "image"
    needs = Needs(input_gradients="guided")
    default_normalize = "none"

    def from_gradients(self, input_gradients: np.ndarray) -> np.ndarray:
        return input_gradients.astype(np.float32, copy=False)


@register
class GuidedGradCAM(Method):
    """Guided Grad-CAM (Selvaraju et al., 2017): guided backpropagation times the Grad-CAM map
    upsampled to the image with negatives set to 0, not rescaled (as HALCON's
    'guided_grad_cam')."""

    name = "guided_grad_cam"
    title = "Guided Grad-CAM"
    kind = "image"
    needs = Needs(activations=True, gradients=True, input_gradients="guided")
    default_normalize = "none"

    def compute(self, evidence: Evidence) -> np.ndarray:
        return self.combine(evidence.input_gradients, GradCAM().compute(evidence))

    @staticmethod
    def combine(input_gradients: np.ndarray, cams: np.ndarray) -> np.ndarray:
        """Guided gradients [T, N, H, W, C] times Grad-CAM maps [N, T, h, w] upsampled to the
        image size with negatives set to 0: images [N, T, H, W, C]."""
        height, width = input_gradients.shape[2:4]
        per_target = []
        for column, guided in enumerate(input_gradients):
            cam = upsample(cams[:, column], height, width)
            per_target.append(guided * np.maximum(cam, 0)[..., None])
        return np.stack(per_target, axis=1).astype(np.float32, copy=False)
