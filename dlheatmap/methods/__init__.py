"""Heatmap methods: each one a short class holding only its formula.

``METHODS`` maps every method name to its class; ``cls.kind`` says whether it returns a map
('map', H x W per target) or an image ('image', H x W x C per target). ``CAM_METHODS`` holds
the class-activation-map methods only.
"""

# isort: off
# The import order is the registration order, which is the order users see the methods in
# (the CLI's --help): Grad-CAM and its gradient-weighted relatives, the CAMs without
# gradients, then the pixel-level input-gradient methods.
from dlheatmap.methods.base import CAM_METHODS, METHODS, CAMMethod, Method, register
from dlheatmap.methods.gradcam import GradCAM
from dlheatmap.methods.gradcampp import GradCAMPlusPlus
from dlheatmap.methods.xgradcam import XGradCAM
from dlheatmap.methods.layercam import LayerCAM
from dlheatmap.methods.hirescam import HiResCAM
from dlheatmap.methods.scorecam import ScoreCAM
from dlheatmap.methods.eigencam import EigenCAM
from dlheatmap.methods.gradient import GuidedBackprop, GuidedGradCAM, Saliency
# isort: on
from dlheatmap.methods.overlay import jet, jet_overlay
from dlheatmap.methods.postprocess import (
    HALCON_SCALINGS,
    NORMALIZATIONS,
    SCALINGS,
    normalize,
    upsample,
)

__all__ = [
    "CAM_METHODS",
    "HALCON_SCALINGS",
    "METHODS",
    "NORMALIZATIONS",
    "SCALINGS",
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
    "upsample",
]
