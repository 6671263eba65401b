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

import numbers
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dlheatmap.errors import HOperatorError, wrong_count, wrong_type, wrong_value
from dlheatmap.gradients import LayerGradients, Targets, guided_gradients, layer_gradients
from dlheatmap.graph import LayerInfo
from dlheatmap.methods import (
    METHODS,
    NORMALIZATIONS,
    CAMMethod,
    GradCAM,
    GuidedGradCAM,
    Method,
    ScoreCAM,
    upsample,
)
from dlheatmap.methods import normalize as normalize_maps
from dlheatmap.methods.forward import SCORES, forward_scores, layer_activations
from dlheatmap.methods.gradient import InputGradientMethod
from dlheatmap.model import Model
from dlheatmap.params import ModelParams
from dlheatmap.samples import images_from_samples

OPERATOR = "explain"
INVALID_LAYER = 7785
UNSUPPORTED_MODEL_TYPE = 7851
UNSUPPORTED_METHOD = 7852
WRONG_TARGET_CLASS = 7853
NO_LAYER = 7912

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
        1309 eps out of range.
    """
    handle, params, batch = prepare(model, images)
    chosen = _method(method)
    indices = target_indices(targets, params, len(batch))
    score, mode, eps = _options(chosen, score, normalize, upsample, eps)
    node = _layer(handle, layer, chosen, params)
    passed, maps, layer_maps = _compute(handle, batch, chosen, indices, node, params, score,
                                        upsample)
    item_ndim = 3 if chosen.kind == "image" else 2
    heat = normalize_maps(maps, mode, eps, item_ndim)
    ids = np.asarray(params.class_ids, np.int64)[passed.targets]
    return Explanation(chosen.name, chosen.kind, heat, ids, passed.targets,
                       passed.probabilities, node.name if node else None, layer_maps)


# --- argument checks -------------------------------------------------------------------------

_MODEL_CACHE: OrderedDict[tuple, Model] = OrderedDict()
_MODEL_CACHE_SIZE = 4
_MODEL_LOCK = threading.Lock()


def prepare(
    model: Any, images: Any, operator: str = OPERATOR
) -> tuple[Model, ModelParams, np.ndarray]:
    """Check a model and images as explain and the metrics take them (positions 1 and 2).

    Returns
    -------
    (Model, ModelParams, ndarray)
        The handle, the parameters for this call (symbolic input dimensions taken from the
        images) and the images as a new N x H x W x C float32 array.

    Raises
    ------
    HOperatorError
        1201, 7801, 2450, 7851, 7912, and 1202/1302/1402 for the images.
    """
    handle = as_model(model, operator)
    handle.ensure_usable(operator)
    if handle.info.model_type != "classification":
        raise HOperatorError(UNSUPPORTED_MODEL_TYPE, f"model type {handle.info.model_type!r}",
                             operator)
    batch = image_array(images, operator)
    params = params_for(handle, batch, operator)
    batch = images_from_samples([{"image": image} for image in batch], params, operator, 2)
    return handle, params, batch


def as_model(model: Any, operator: str = OPERATOR) -> Model:
    """A Model as it is, or the Model read from a path (a few are kept, keyed by path, size
    and modification time)."""
    if isinstance(model, Model):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise wrong_type(1, f"model must be a dlheatmap Model or a path, got "
                         f"{type(model).__name__}", operator)
    path = os.path.realpath(os.fspath(model))
    try:
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = None  # read_dl_model's error (7801) says what is wrong
    with _MODEL_LOCK:
        if key is not None and key in _MODEL_CACHE:
            _MODEL_CACHE.move_to_end(key)
            return _MODEL_CACHE[key]
    handle = Model.from_file(path, operator)
    if key is None:
        return handle
    with _MODEL_LOCK:
        _MODEL_CACHE[key] = handle
        while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
            _MODEL_CACHE.popitem(last=False)
    return handle


def image_array(images: Any, operator: str = OPERATOR) -> np.ndarray:
    """N x H x W x C, H x W x C or H x W as a 4-D view (values are checked later)."""
    if not isinstance(images, np.ndarray):
        raise wrong_type(2, f"images must be a numpy array, got {type(images).__name__}",
                         operator)
    if images.ndim == 2:
        images = images[None, :, :, None]
    elif images.ndim == 3:
        images = images[None]
    elif images.ndim != 4:
        raise wrong_value(2, f"images must be N x H x W x C, H x W x C or H x W, got shape "
                          f"{images.shape}", operator)
    if len(images) == 0:
        raise wrong_count(2, "no images given", operator)
    return images


def params_for(model: Model, images: np.ndarray, operator: str = OPERATOR) -> ModelParams:
    """The handle's parameters, with symbolic input dimensions taken from the images."""
    params = model.params
    image = model.info.image_input
    if image is None:
        raise HOperatorError(NO_LAYER, "the model has no single image input", operator)
    _, height, width, channels = images.shape
    changes = {}
    if image.height is None:
        changes["image_height"] = int(height)
    if image.width is None:
        changes["image_width"] = int(width)
    if image.channels is None:
        changes["image_num_channels"] = int(channels)
    return replace(params, **changes) if changes else params


def _method(method: Any) -> Method:
    if isinstance(method, Method):
        return method
    if isinstance(method, type) and issubclass(method, Method):
        return method()
    if not isinstance(method, str):
        raise wrong_type(3, f"method must be a name or a Method, got {type(method).__name__}",
                         OPERATOR)
    if method not in METHODS:
        raise HOperatorError(UNSUPPORTED_METHOD, f"method {method!r} is not one of "
                             f"{sorted(METHODS)}", OPERATOR)
    return METHODS[method]()


def _is_integer(value: Any) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
        value, (bool, np.bool_))


def target_indices(
    targets: Any, params: ModelParams, count: int, operator: str = OPERATOR
) -> np.ndarray | None:
    """Class indices [N, T] for the requested class IDs (explain's ``targets``, position 4),
    or None for each image's top class."""
    if targets is None:
        return None
    if _is_integer(targets):
        ids = np.full((count, 1), int(targets), np.int64)
    else:
        ids = _id_array(targets, count, operator)
    index_of = {class_id: index for index, class_id in enumerate(params.class_ids)}
    unknown = sorted({int(i) for i in ids.ravel()} - set(index_of))
    if unknown:
        raise HOperatorError(WRONG_TARGET_CLASS, f"class IDs {unknown} are not among the "
                             f"model's class_ids {list(params.class_ids)}", operator)
    return np.vectorize(index_of.__getitem__, otypes=[np.int64])(ids).reshape(ids.shape)


def _id_array(targets: Any, count: int, operator: str) -> np.ndarray:
    if isinstance(targets, (str, bytes)) or not isinstance(targets, (Sequence, np.ndarray)):
        raise wrong_type(4, f"targets must be None, an int, a sequence or an array of class "
                         f"IDs, got {type(targets).__name__}", operator)
    array = np.asarray(targets, dtype=object)
    if array.size == 0:
        raise wrong_count(4, "targets is empty; use None for each image's top class", operator)
    if array.ndim not in (1, 2) or not all(_is_integer(v) for v in array.ravel()):
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
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (
            np.isfinite(eps) and eps >= 0):
        raise wrong_value(9, f"eps must be a finite number >= 0, got {eps!r}", OPERATOR)
    return score, mode, float(eps)


def _layer(model: Model, name: Any, method: Method, params: ModelParams) -> LayerInfo | None:
    if not method.uses_layer:
        if name is not None:
            raise wrong_value(5, f"method {method.name!r} uses no layer; leave layer None",
                              OPERATOR)
        return None
    if name is None:
        layer = model.default_target_layer(params)
        if layer is None:
            raise HOperatorError(NO_LAYER, "the model has no convolution with an output "
                                 "larger than 1 x 1", OPERATOR)
        return layer
    if not isinstance(name, str):
        raise wrong_type(5, f"layer must be a node name, got {type(name).__name__}", OPERATOR)
    layer = model.info.by_name.get(name)
    if layer is None:
        raise HOperatorError(INVALID_LAYER, f"no node named {name!r} ('summary' lists the "
                             "node names)", OPERATOR)
    shape = model.tensor_shapes(params).get(layer.output)
    if shape is None or len(shape) != 4 or shape[2] <= 1 or shape[3] <= 1:
        raise HOperatorError(INVALID_LAYER, f"node {name!r} has output shape {shape}; a "
                             "layer method needs N x C x h x w with h and w > 1", OPERATOR)
    return layer


# --- computing ---------------------------------------------------------------------------------

def _compute(model, images, method, indices, layer, params, score, upsample_maps):
    """(passed, heatmaps before normalisation, raw layer maps or None)."""
    choose = Targets(indices)
    tensor = layer.output if layer is not None else None
    height, width = images.shape[1:3]
    if method.input_gradients is not None:
        passed = guided_gradients(model, images, choose, tensor, params, score,
                                  guided=method.input_gradients == "guided")
        return passed, _input_gradient_maps(method, passed, height, width), None
    if method.needs_gradients:
        passed = layer_gradients(model, images, choose, tensor, params, score)
    else:
        passed = layer_activations(model, images, choose, tensor, params)
    raw = _cam_maps(model, images, method, passed, params, score)
    maps = raw
    if upsample_maps:
        flat = raw.reshape(-1, *raw.shape[2:])
        maps = upsample(flat, height, width).reshape(*raw.shape[:2], height, width)
    return passed, maps, raw


def _cam_maps(model, images, method: CAMMethod, passed: LayerGradients, params, score):
    """Raw CAM maps [N, T, h, w]."""
    activations, targets = passed.activations, passed.targets
    if isinstance(method, ScoreCAM):
        chunk = method.batch
        return method.maps(activations, images, targets,
                           lambda batch: forward_scores(model, batch, params, score, chunk))
    if not method.needs_gradients:  # class-agnostic: one map for every target
        single = method(activations, None)
        return np.repeat(single[:, None], targets.shape[1], axis=1)
    return np.stack([method(activations, grads) for grads in passed.gradients], axis=1)


def _input_gradient_maps(method: Method, passed: LayerGradients, height: int, width: int):
    """Heatmaps [N, T, H, W(, C)] of input-gradient methods."""
    per_target = []
    for column, grads in enumerate(passed.input_gradients):
        if isinstance(method, GuidedGradCAM):
            cam = upsample(GradCAM()(passed.activations, passed.gradients[column]), height,
                           width)
            per_target.append(method(grads, cam))
        elif isinstance(method, InputGradientMethod):
            per_target.append(method(grads))
        else:
            raise TypeError(f"{type(method).__name__} is not an input-gradient method")
    return np.stack(per_target, axis=1)
