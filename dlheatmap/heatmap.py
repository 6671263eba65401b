"""Grad-CAM and Guided Grad-CAM on a Model: the Pythonic core behind gen_dl_model_heatmap.

All functions take validated N x H x W x C float32 images (HALCON layout) and the classes to
explain (:class:`dlheatmap.gradients.Targets`); the HALCON layer adds argument checking on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlheatmap.errors import HOperatorError
from dlheatmap.gradients import Targets, graph_grad_cam, guided_gradients, layer_gradients
from dlheatmap.graph import LayerInfo
from dlheatmap.methods import GradCAM, scale, upsample
from dlheatmap.model import Model
from dlheatmap.params import ModelParams

UNSUPPORTED_VALUE = 7914


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


top_class = Targets()  # each sample's most probable class


def fixed_class(index: int) -> Targets:
    """The same class index for every sample."""
    return Targets(np.array([index]))


def resolve_layer(
    model: Model, name: str | None, params: ModelParams, operator: str = "gen_dl_model_heatmap"
) -> LayerInfo:
    """The convolution to explain: ``name``, or the default deepest non-1x1 convolution.

    Raises HOperatorError 7914 for an unknown name, a layer that is not a convolution or a
    convolution with a 1 x 1 output; 7912 if the model has no suitable convolution at all.
    """
    if not name:
        layer = model.default_target_layer(params)
        if layer is None:
            raise HOperatorError(
                7912, "the model has no convolution with an output larger than 1 x 1", operator)
        return layer
    layer = model.info.by_name.get(name)
    if layer is None:
        raise HOperatorError(UNSUPPORTED_VALUE, f"no layer named {name!r} ('summary' lists "
                             "the layer names)", operator)
    if layer.op_type != "Conv":
        raise HOperatorError(UNSUPPORTED_VALUE, f"layer {name!r} is a {layer.op_type}, not a "
                             "convolution", operator)
    size = model.spatial_size(layer, params)
    if size is None or size[0] <= 1 or size[1] <= 1:
        raise HOperatorError(UNSUPPORTED_VALUE, f"convolution {name!r} has a trivial output "
                             f"size {size}; choose a layer with width and height > 1", operator)
    return layer


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
) -> HeatmapResult:
    """Grad-CAM heatmaps [N, H, W] at the images' size."""
    params = params or model.params
    layer = layer or resolve_layer(model, None, params)
    tensor = layer_tensor(model, layer, use_conv_only)
    passed = graph_grad_cam(model, images, choose, tensor, params, scaling)
    if passed is not None:  # onnxruntime computed the whole heatmap
        maps, heat = passed.grad_cam, passed.heatmaps
    else:  # differentiated in torch; the map in numpy
        passed = layer_gradients(model, images, choose, tensor, params)
        maps = GradCAM()(passed.activations, passed.gradients[0])
        heat = scale(upsample(maps, images.shape[1], images.shape[2]), scaling, in_place=True)
    return HeatmapResult(passed.probabilities, passed.targets[:, 0], heat, maps, layer, tensor)


def guided_grad_cam(
    model: Model,
    images: np.ndarray,
    choose: Targets = top_class,
    layer: LayerInfo | None = None,
    params: ModelParams | None = None,
) -> HeatmapResult:
    """Guided Grad-CAM images [N, H, W, C]: guided backpropagation times the Grad-CAM map.

    The Grad-CAM factor is the map upsampled to image size with negatives set to 0 and no
    rescaling; the product is not rescaled either.
    """
    params = params or model.params
    layer = layer or resolve_layer(model, None, params)
    passed = guided_gradients(model, images, choose, layer.output, params)
    maps = GradCAM()(passed.activations, passed.gradients[0])
    cam = scale(upsample(maps, images.shape[1], images.shape[2]), "none", in_place=True)
    heat = (passed.input_gradients[0] * cam[..., None]).astype(np.float32)
    return HeatmapResult(passed.probabilities, passed.targets[:, 0], heat, maps, layer,
                         layer.output)
