"""Heatmap methods: each one a short class holding only its formula.

``METHODS`` maps every method name to its class; ``cls.kind`` says whether it returns a map
('map', H x W per target) or an image ('image', H x W x C per target). ``CAM_METHODS`` holds
the class-activation-map methods only.
"""

from dlheatmap.methods.base import CAM_METHODS, METHODS, CAMMethod, Method, register
from dlheatmap.methods.eigencam import EigenCAM
from dlheatmap.methods.gradcam import GradCAM
from dlheatmap.methods.gradcampp import GradCAMPlusPlus
from dlheatmap.methods.gradient import GuidedBackprop, GuidedGradCAM, Saliency
from dlheatmap.methods.hirescam import HiResCAM
from dlheatmap.methods.layercam import LayerCAM
from dlheatmap.methods.overlay import jet, jet_overlay
from dlheatmap.methods.postprocess import NORMALIZATIONS, normalize, scale, upsample
from dlheatmap.methods.scorecam import ScoreCAM
from dlheatmap.methods.xgradcam import XGradCAM

__all__ = [
    "CAM_METHODS",
    "METHODS",
    "NORMALIZATIONS",
    "CAMMethod",
    "EigenCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "Method",
    "Saliency",
    "ScoreCAM",
    "XGradCAM",
    "jet",
    "jet_overlay",
    "normalize",
    "register",
    "scale",
    "upsample",
]
