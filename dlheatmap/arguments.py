"""The shared argument layer of every surface: the HALCON operators, explain, the metrics and
the CLI check their arguments with these predicates and conversions, and map a failed layer
lookup onto their own error code.

Everything here raises :class:`~dlheatmap.errors.HOperatorError` with HALCON's codes
(:class:`~dlheatmap.errors.ErrorCode` and the positional 120n/130n/140n helpers), except the
layer lookup, which raises :class:`LayerError` for the surface to translate.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from dlheatmap.errors import ErrorCode, HOperatorError, wrong_count, wrong_type, wrong_value
from dlheatmap.graph import LayerInfo
from dlheatmap.model import Model
from dlheatmap.params import ModelParams, short_repr
from dlheatmap.samples import images_from_samples
from dlheatmap.values import empty_tuple, is_integer, is_real, single  # noqa: F401  (re-exported)

# --- model and images -------------------------------------------------------------------------

_MODEL_CACHE: OrderedDict[tuple, Model] = OrderedDict()
_MODEL_CACHE_SIZE = 4
_MODEL_LOCK = threading.Lock()


def prepare(model: Any, images: Any, operator: str) -> tuple[Model, ModelParams, np.ndarray]:
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
        raise HOperatorError(ErrorCode.UNSUPPORTED_MODEL_TYPE,
                             f"model type {handle.info.model_type!r}", operator)
    batch = image_array(images, operator)
    params = params_for(handle, batch, operator)
    batch = images_from_samples([{"image": image} for image in batch], params, operator, 2)
    return handle, params, batch


def as_model(model: Any, operator: str) -> Model:
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


def image_array(images: Any, operator: str) -> np.ndarray:
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


def params_for(model: Model, images: np.ndarray, operator: str) -> ModelParams:
    """The handle's parameters, with symbolic input dimensions taken from the images."""
    params = model.params
    image = model.info.image_input
    if image is None:
        raise HOperatorError(ErrorCode.UNSUPPORTED_MODEL, "the model has no single image input",
                             operator)
    _, height, width, channels = images.shape
    changes = {}
    if image.height is None:
        changes["image_height"] = int(height)
    if image.width is None:
        changes["image_width"] = int(width)
    if image.channels is None:
        changes["image_num_channels"] = int(channels)
    return replace(params, **changes) if changes else params


# --- class IDs --------------------------------------------------------------------------------


def class_indices(ids: np.ndarray, params: ModelParams, name: str,
                  operator: str) -> np.ndarray:
    """Output indices of class IDs (any shape); 7853 naming the IDs the model does not have
    (``name``: the argument, for the message)."""
    index_of = params.class_index
    unknown = sorted({int(i) for i in np.ravel(ids)} - index_of.keys())
    if len(unknown) == 1:
        raise HOperatorError(ErrorCode.WRONG_TARGET_CLASS, f"{name}: class ID "
                             f"{short_repr(unknown[0])} is not in the model's class_ids",
                             operator)
    if unknown:
        raise HOperatorError(ErrorCode.WRONG_TARGET_CLASS, f"{name}: class IDs "
                             f"{short_repr(unknown)} are not in the model's class_ids",
                             operator)
    flat = [index_of[int(i)] for i in np.ravel(ids)]
    return np.asarray(flat, np.int64).reshape(np.shape(ids))


def one_class_or_none(value: Any, position: int, operator: str) -> int | None:
    """HALCON's TargetClasses: one class ID for every sample, or an empty tuple (None) for each
    sample's top class. 120n for a non-integer or binary data, 140n for several IDs."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise wrong_type(position, f"TargetClasses must be an integer class ID, got binary "
                         f"data ({type(value).__name__}) {short_repr(bytes(value))}", operator)
    if empty_tuple(value):
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if not values:  # an empty numpy array
        return None
    if len(values) > 1:
        raise wrong_count(position, f"TargetClasses takes one class ID or none, got "
                          f"{len(values)}", operator)
    (class_id,) = values
    if not is_integer(class_id):
        raise wrong_type(position, f"TargetClasses must be an integer class ID, got "
                         f"{short_repr(class_id)}", operator)
    return int(class_id)


# --- layers -----------------------------------------------------------------------------------


class LayerError(Exception):
    """A layer name that does not name a usable layer; each surface raises its own code."""


def lookup_layer(model: Model, name: str, params: ModelParams, *,
                 convolution: bool) -> LayerInfo:
    """The node called ``name`` whose output is N x C x h x w with h and w > 1 (and, with
    ``convolution``, that is a Conv). Raises :class:`LayerError` saying what is wrong."""
    layer = model.info.by_name.get(name)
    if layer is None:
        raise LayerError(f"no layer named {name!r} ('summary' lists the layer names)")
    if convolution and layer.op_type != "Conv":
        raise LayerError(f"layer {name!r} is a {layer.op_type}, not a convolution")
    size = model.spatial_size(layer, params)
    if size is None or size[0] <= 1 or size[1] <= 1:
        shape = model.layer_shape(layer, params)
        raise LayerError(f"layer {name!r} has output shape {shape}; choose a layer whose "
                         "output is N x C x h x w with h and w > 1")
    return layer


def default_layer(model: Model, params: ModelParams, operator: str) -> LayerInfo:
    """The deepest convolution with an output larger than 1 x 1; 7912 if there is none."""
    layer = model.default_target_layer(params)
    if layer is None:
        raise HOperatorError(ErrorCode.UNSUPPORTED_MODEL, "the model has no convolution with "
                             "an output larger than 1 x 1", operator)
    return layer
