"""Grad-CAM and Guided Grad-CAM on a Model: the Pythonic core behind gen_dl_model_heatmap.

Thin adapters over the methods :class:`~dlheatmap.methods.GradCAM` and
:class:`~dlheatmap.methods.GuidedGradCAM` and the engine (:func:`dlheatmap.engine.gather`),
the same path :func:`dlheatmap.explain` takes. All functions take validated N x H x W x C
float32 images (HALCON layout) and the classes to explain
(:class:`dlheatmap.engine.Targets`); the HALCON layer adds argument checking on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlheatmap.arguments import LayerError, default_layer, lookup_layer
from dlheatmap.engine import TOP_CLASS, Targets, gather
from dlheatmap.errors import ErrorCode, HOperatorError
from dlheatmap.graph import LayerInfo
from dlheatmap.methods import HALCON_SCALINGS, GradCAM, GuidedGradCAM, normalize, upsample
from dlheatmap.model import Model
from dlheatmap.params import ModelParams


@dataclass
class HeatmapResult:
    """Heatmaps of a batch and what the forward pass found.

    ``heatmaps`` is [N, H, W] for Grad-CAM and [N, H, W, C] for Guided Grad-CAM;
    ``layer_maps`` is the Grad-CAM map at the target layer's resolution, [N, h, w],
    before any ReLU or scaling.
    """

    probabilities: np.ndarray
    targets: np.ndarray  # [N] class indices
    heatmaps: np.ndarray
    layer_maps: np.ndarray
    layer: LayerInfo
    tensor: str


top_class = TOP_CLASS  # each sample's most probable class
fixed_class = Targets.fixed  # the same class index for every sample


def resolve_layer(
    model: Model, name: str | None, params: ModelParams, operator: str = "gen_dl_model_heatmap"
) -> LayerInfo:
    """The convolution to explain: ``name``, or the default deepest non-1x1 convolution.

    Raises HOperatorError 7914 for an unknown name, a layer that is not a convolution or a
    convolution with a 1 x 1 output; 7912 if the model has no suitable convolution at all.
    """
    if not name:
        return default_layer(model, params, operator)
    try:
        return lookup_layer(model, name, params, convolution=True)
    except LayerError as exc:  # HALCON: a GenParam value it does not support
        raise HOperatorError(ErrorCode.UNSUPPORTED_GENVALUE, str(exc), operator) from None


def layer_tensor(model: Model, layer: LayerInfo, use_conv_only: bool) -> str:
    """The convolution's output, or with ``use_conv_only`` False that of its fused ReLU."""
    if not use_conv_only:
        activation = model.info.fused_activation(layer)
        if activation is not None:
            return activation.output
    return layer.output


def grad_cam(
    model: Model,
    images: np.ndarray,
    choose: Targets = top_class,
    layer: LayerInfo | None = None,
    use_conv_only: bool = True,
    scaling: str = "scale_after_relu",
    params: ModelParams | None = None,
    engine: str = "auto",
) -> HeatmapResult:
    """Grad-CAM heatmaps [N, H, W] at the images' size, scaled by HALCON's ``scaling``;
    ``engine`` as for :func:`dlheatmap.engine.gather`."""
    params = params or model.params
    layer = layer or resolve_layer(model, None, params)
    tensor = layer_tensor(model, layer, use_conv_only)
    mode = HALCON_SCALINGS[scaling]
    method = GradCAM()
    evidence = gather(model, images, method.needs, choose, tensor, params, engine=engine,
                      heatmap_mode=mode)
    maps = method.compute(evidence)[:, 0]
    if evidence.heatmaps is not None:  # the engine resized and scaled the map itself
        heat = evidence.heatmaps[:, 0]
    else:
        heat = normalize(upsample(maps, images.shape[1], images.shape[2]), mode)
    return HeatmapResult(evidence.probabilities, evidence.targets[:, 0], heat, maps, layer,
                         tensor)


def guided_grad_cam(
    model: Model,
    images: np.ndarray,
    choose: Targets = top_class,
    layer: LayerInfo | None = None,
    params: ModelParams | None = None,
    engine: str = "auto",
) -> HeatmapResult:
    """Guided Grad-CAM images [N, H, W, C]: guided backpropagation times the Grad-CAM map
    (:class:`~dlheatmap.methods.GuidedGradCAM`); ``engine`` as for
    :func:`dlheatmap.engine.gather`."""
    params = params or model.params
    layer = layer or resolve_layer(model, None, params)
    method = GuidedGradCAM()
    evidence = gather(model, images, method.needs, choose, layer.output, params, engine=engine)
    maps = GradCAM().compute(evidence)
    heat = method.combine(evidence.input_gradients, maps)[:, 0]
    maps = maps[:, 0]
    return HeatmapResult(evidence.probabilities, evidence.targets[:, 0], heat, maps, layer,
                         layer.output)
