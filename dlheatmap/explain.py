"""The Pythonic API: any method, several targets per sample, arrays in and out.

``explain(model, images, method=..., targets=..., layer=...)`` sits beside the HALCON operators
(which stay strict: two methods, HALCON's arguments). It takes a batch of images as one array,
returns one array of heatmaps, and offers every method in :data:`METHODS`:

- input-gradient methods: 'saliency', 'guided_backprop';
- class activation maps: 'grad_cam', 'grad_cam_plus_plus', 'xgrad_cam', 'layer_cam',
  'hires_cam', 'score_cam', 'eigen_cam';
- 'guided_grad_cam' (both).

Each method's output kind is ``METHODS[name].kind``: 'map' (one H x W map per target) or
'image' (H x W x C per target).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlheatmap.arguments import (
    LayerError,
    class_indices,
    default_layer,
    is_integer,
    is_real,
    lookup_layer,
    prepare,
)
from dlheatmap.engine import ENGINES, SCORES, EngineUnavailableError, Targets, gather
from dlheatmap.errors import ErrorCode, HOperatorError, wrong_count, wrong_type, wrong_value
from dlheatmap.graph import LayerInfo
from dlheatmap.methods import METHODS, NORMALIZATIONS, Method
from dlheatmap.methods import normalize as normalize_maps
from dlheatmap.methods import upsample as upsample_maps
from dlheatmap.model import Model
from dlheatmap.params import ModelParams

OPERATOR = "explain"

__all__ = ["METHODS", "Explanation", "explain"]


@dataclass
class Explanation:
    """Heatmaps of a batch and what the model said about it.

    Attributes
    ----------
    method : str
        The method's name.
    kind : str
        'map' or 'image'.
    heatmaps : ndarray, float32
        [N, T, H, W] for kind 'map', [N, T, H, W, C] for kind 'image' (HALCON layout);
        [N, T, h, w] at the layer's resolution for a CAM method called with upsample=False.
    class_ids : ndarray of int64, [N, T]
        The model's class IDs (parameter ``class_ids``) the heatmaps explain.
    class_indices : ndarray of int64, [N, T]
        The same classes as positions in the model's output.
    probabilities : ndarray, float32, [N, classes]
        Class probabilities of each image (as apply_dl_model computes them).
    layer : str or None
        The node whose output the method used (None for input-gradient methods).
    layer_maps : ndarray or None, float32, [N, T, h, w]
        CAM methods: the raw map at the layer's resolution, before upsampling, ReLU or
        normalisation.
    """

    method: str
    kind: str
    heatmaps: np.ndarray
    class_ids: np.ndarray
    class_indices: np.ndarray
    probabilities: np.ndarray
    layer: str | None
    layer_maps: np.ndarray | None


def explain(
    model: Model | str | os.PathLike,
    images: np.ndarray,
    method: str | Method = "grad_cam",
    targets: Any = None,
    layer: str | None = None,
    *,
    score: str | None = None,
    normalize: str | None = None,
    upsample: bool = True,
    eps: float = 0.0,
    engine: str = "auto",
) -> Explanation:
    """Explain a classifier's decisions on a batch of images.

    Parameters
    ----------
    model : Model, str or path
        A model handle (``read_dl_model``) or the path of an ONNX file (read once and kept in
        a small cache).
    images : ndarray
        N x H x W x C (or one H x W x C image, or one H x W grey image), real-valued and
        finite, in HALCON layout at the model's input size. For a graph whose height and width
        are symbolic, the images' size is used for this call (the handle is not changed).
    method : str or Method
        A name from :data:`METHODS`, or a configured instance such as
        ``Saliency(reduce='max')``, ``EigenCAM(centre=True)``, ``ScoreCAM(batch=128)``,
        ``GradCAM(l2_gradients=True)``.
    targets : None, int, sequence or array
        Class IDs (the model's ``class_ids``; by default these equal the output indices).
        None: each image's top class. An int: that class for every image. A 1-D sequence of N
        IDs: one per image. An N x T array: T classes per image (all computed in one pass).
    layer : str, optional
        Name of the node (as in 'summary') whose output a layer method uses; any node with an
        N x C x h x w output larger than 1 x 1 (a Conv, or the Relu after it as Keras models
        use). Default: the deepest convolution with an output larger than 1 x 1. Refused for
        methods that use no layer.
    score : {'logit', 'probability'}, optional
        The class score that is differentiated (or, for Score-CAM, that weighs the channels).
        Default: the method's ``default_score`` ('logit'; 'probability' for Score-CAM).
    normalize : {'max', 'minmax', 'abs_max', 'relu', 'none'}, optional
        Per heatmap, after upsampling. Default: the method's ``default_normalize`` ('max' for
        maps, 'none' for images). See :func:`dlheatmap.methods.normalize`.
    upsample : bool
        CAM methods: resize maps to the image size (bilinear, half-pixel centres) before
        normalising (default); False keeps the layer's resolution.
    eps : float
        Added to the normalisation's divisor (AUCMEDI: 1e-8, eli5: 1e-7).
    engine : {'auto', 'onnxruntime', 'torch'}
        Who computes the gradients: 'auto' (default) takes onnxruntime's gradient graph
        wherever every op on the method's paths has a gradient rule, torch otherwise;
        'onnxruntime' refuses (1310) where it cannot be used; 'torch' converts the graph with
        onnx2torch.

    Returns
    -------
    Explanation

    Raises
    ------
    HOperatorError
        1201 model not a Model or path; 7801 unreadable file; 2450 cleared handle;
        7851 not a classifier; 1202/1302 images of the wrong type, shape, dtype or with
        NaN/Inf; 1203 method of the wrong type, 7852 unknown method; 1204 targets of the wrong
        type, 1404 wrong number of targets, 7853 a class ID the model does not have;
        1205 layer not a string, 1305 a layer for a method that uses none, 7785 no such node
        or not a spatial layer, 7912 no default layer; 1306 score, 1307 normalize, 1208 upsample,
        1309 eps out of range; 1310 an unknown engine, or 'onnxruntime' where it cannot serve.
    """
    handle, params, batch = prepare(model, images, OPERATOR)
    chosen = _method(method)
    indices = target_indices(targets, params, len(batch))
    score, mode, eps = _options(chosen, score, normalize, upsample, eps)
    node = _layer(handle, layer, chosen, params)
    # where the engine computes the map in its graph, it can resize and normalise it too
    head = mode if upsample and eps == 0 else None
    if engine not in ENGINES:
        raise wrong_value(10, f"engine must be one of {ENGINES}, got {engine!r}", OPERATOR)
    try:
        evidence = gather(handle, batch, chosen.needs, Targets(indices),
                          node.output if node else None, params, score=score, engine=engine,
                          heatmap_mode=head)
    except EngineUnavailableError as exc:
        raise wrong_value(10, str(exc), OPERATOR) from None
    maps = chosen.compute(evidence)
    layer_maps = maps if chosen.at_layer_resolution else None
    if evidence.heatmaps is not None:
        heat = evidence.heatmaps
    else:
        heat = normalize_maps(_resized(maps, batch, chosen, upsample), mode, eps,
                              3 if chosen.kind == "image" else 2)
    ids = np.asarray(params.class_ids, np.int64)[evidence.targets]
    return Explanation(chosen.name, chosen.kind, heat, ids, evidence.targets,
                       evidence.probabilities, node.name if node else None, layer_maps)


def _resized(maps: np.ndarray, images: np.ndarray, method: Method, resize: bool) -> np.ndarray:
    """Layer-resolution maps [N, T, h, w] upsampled to the images, if asked for."""
    if not (method.at_layer_resolution and resize):
        return maps
    height, width = images.shape[1:3]
    flat = upsample_maps(maps.reshape(-1, *maps.shape[2:]), height, width)
    return flat.reshape(*maps.shape[:2], height, width)


# --- argument checks -------------------------------------------------------------------------

def _method(method: Any) -> Method:
    if isinstance(method, Method):
        return method
    if isinstance(method, type) and issubclass(method, Method):
        return method()
    if not isinstance(method, str):
        raise wrong_type(3, f"method must be a name or a Method, got {type(method).__name__}",
                         OPERATOR)
    if method not in METHODS:
        raise HOperatorError(ErrorCode.UNSUPPORTED_METHOD, f"method {method!r} is not one of "
                             f"{sorted(METHODS)}", OPERATOR)
    return METHODS[method]()


def target_indices(
    targets: Any, params: ModelParams, count: int, operator: str = OPERATOR
) -> np.ndarray | None:
    """Class indices [N, T] for the requested class IDs (explain's ``targets``, position 4),
    or None for each image's top class."""
    if targets is None:
        return None
    if is_integer(targets):
        ids = np.full((count, 1), int(targets), np.int64)
    else:
        ids = _id_array(targets, count, operator)
    return class_indices(ids, params, "targets", operator)


def _id_array(targets: Any, count: int, operator: str) -> np.ndarray:
    if isinstance(targets, (str, bytes)) or not isinstance(targets, (Sequence, np.ndarray)):
        raise wrong_type(4, f"targets must be None, an int, a sequence or an array of class "
                         f"IDs, got {type(targets).__name__}", operator)
    array = np.asarray(targets, dtype=object)
    if array.size == 0:
        raise wrong_count(4, "targets is empty; use None for each image's top class", operator)
    if array.ndim not in (1, 2) or not all(is_integer(v) for v in array.ravel()):
        raise wrong_type(4, "targets must hold integer class IDs, as a 1-D sequence (one per "
                         "image) or an N x T array (T per image)", operator)
    if array.shape[0] != count:
        raise wrong_count(4, f"{array.shape[0]} target rows for {count} images; give one ID "
                          "per image, or an N x T array for several classes per image",
                          operator)
    return array.astype(np.int64).reshape(count, -1)


def _options(method: Method, score, mode, upsample_maps, eps) -> tuple[str, str, float]:
    score = method.default_score if score is None else score
    if score not in SCORES:
        raise wrong_value(6, f"score must be one of {SCORES}, got {score!r}", OPERATOR)
    mode = method.default_normalize if mode is None else mode
    if mode not in NORMALIZATIONS:
        raise wrong_value(7, f"normalize must be one of {NORMALIZATIONS}, got {mode!r}",
                          OPERATOR)
    if not isinstance(upsample_maps, (bool, np.bool_)):
        raise wrong_type(8, f"upsample must be True or False, got {upsample_maps!r}", OPERATOR)
    if not is_real(eps) or not (np.isfinite(eps) and eps >= 0):
        raise wrong_value(9, f"eps must be a finite number >= 0, got {eps!r}", OPERATOR)
    return score, mode, float(eps)


def _layer(model: Model, name: Any, method: Method, params: ModelParams) -> LayerInfo | None:
    if not method.uses_layer():
        if name is not None:
            raise wrong_value(5, f"method {method.name!r} uses no layer; leave layer None",
                              OPERATOR)
        return None
    if name is None:
        return default_layer(model, params, OPERATOR)
    if not isinstance(name, str):
        raise wrong_type(5, f"layer must be a node name, got {type(name).__name__}", OPERATOR)
    try:  # any spatial node: a Conv, or the Relu after it as Keras models have it
        return lookup_layer(model, name, params, convolution=False)
    except LayerError as exc:
        raise HOperatorError(ErrorCode.INVALID_LAYER, str(exc), OPERATOR) from None
