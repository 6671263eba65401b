"""Heatmap methods: each one a short class holding only its formula."""

from dlheatmap.methods.base import CAM_METHODS, CAMMethod, register
from dlheatmap.methods.gradcam import GradCAM
from dlheatmap.methods.postprocess import scale, upsample

__all__ = ["CAM_METHODS", "CAMMethod", "GradCAM", "register", "scale", "upsample"]
