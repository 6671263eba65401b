"""Methods on the gradient with respect to the input image: saliency, guided backpropagation
and Guided Grad-CAM."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from dlheatmap.methods.base import Method, register

REDUCTIONS = ("abs_max", "max")


class InputGradientMethod(Method):
    """A method computed from input gradients [N, H, W, C] (HALCON layout)."""

    uses_layer = False
    needs_gradients = False
    input_gradients: ClassVar[str | None] = "plain"

    def __call__(self, input_gradients: np.ndarray) -> np.ndarray:
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

    def __call__(self, input_gradients: np.ndarray) -> np.ndarray:
        values = np.abs(input_gradients) if self.reduce == "abs_max" else input_gradients
        return values.max(axis=-1).astype(np.float32)


@register
class GuidedBackprop(InputGradientMethod):
    """Guided backpropagation (Springenberg et al., 2015): the input gradient where every ReLU
    passes back only positive gradients at positive inputs. An image per target."""

    name = "guided_backprop"
    title = "Guided Backprop"
    kind = "image"
    input_gradients = "guided"
    default_normalize = "none"

    def __call__(self, input_gradients: np.ndarray) -> np.ndarray:
        return input_gradients.astype(np.float32, copy=False)


@register
class GuidedGradCAM(Method):
    """Guided Grad-CAM (Selvaraju et al., 2017): guided backpropagation times the Grad-CAM map
    upsampled to the image with negatives set to 0 (as HALCON's 'guided_grad_cam')."""

    name = "guided_grad_cam"
    title = "Guided Grad-CAM"
    kind = "image"
    input_gradients = "guided"
    default_normalize = "none"

    def __call__(self, input_gradients: np.ndarray, cam: np.ndarray) -> np.ndarray:
        """``cam``: Grad-CAM maps [N, H, W] at the image size, before any ReLU."""
        return (input_gradients * np.maximum(cam, 0)[..., None]).astype(np.float32)
