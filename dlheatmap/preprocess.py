"""HALCON's deep-learning preprocessing procedures for classification samples.

``gen_dl_samples_from_images`` wraps images in sample dicts, ``create_dl_preprocess_param``
(or ``create_dl_preprocess_param_from_model``) describes what the model expects, and
``preprocess_dl_samples`` turns each sample's image into what the model takes: the model's
channel count, its width and height, real type, grey values mapped onto
image_range_min..image_range_max or normalised.

Each image goes through these steps, in this order (dlheatmap's decision, see
``spec/decisions-workflow.md``):

1. channels: an alpha channel is dropped (2 -> 1, 4 -> 3), then one grey channel is repeated
   three times, or three colour channels become grey as 0.299 R + 0.587 G + 0.114 B;
2. size: area averaging along an axis that shrinks, linear interpolation along one that grows
   (:func:`dlheatmap.imaging.resize`);
3. grey values, by normalisation type:

   - ``'none'``: ``uint8`` values g become ``min + g (max - min) / 255``, ``uint16`` values
     ``min + g (max - min) / 65535``; real images are left as they are;
   - ``'all_channels'``: the image's smallest and largest value over all channels are mapped
     linearly onto min and max (one map for all channels);
   - ``'first_channel'``: as 'all_channels', but the map is taken from the first channel's
     smallest and largest value and applied to every channel;
   - ``'constant_values'``: ``(g - mean_c) / deviation_c`` per channel c, with the means and
     deviations given in the image's own grey values (GenParam 'mean_values_normalization' and
     'deviation_values_normalization'); min and max are not used.

The result is ``float32``, height x width for one channel, height x width x channels
otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from dlheatmap.errors import ErrorCode, HOperatorError, wrong_count, wrong_type, wrong_value
from dlheatmap.imaging import resize
from dlheatmap.model import Model
from dlheatmap.values import is_integer, is_real, single

MODEL_TYPES = ("classification",)
NORMALIZATION_TYPES = ("none", "all_channels", "first_channel", "constant_values")
DOMAIN_HANDLING = ("full_domain", "crop_domain", "keep_domain")
GEN_PARAM_KEYS = ("mean_values_normalization", "deviation_values_normalization",
                  "augmentation", "check_params")
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # HALCON's rgb1_to_gray
PARAM_KEYS = ("model_type", "image_width", "image_height", "image_num_channels",
              "image_range_min", "image_range_max", "normalization_type", "domain_handling")

_CREATE = "create_dl_preprocess_param"
_FROM_MODEL = "create_dl_preprocess_param_from_model"
_PREPROCESS = "preprocess_dl_samples"


# --- samples ---------------------------------------------------------------------------------

def gen_dl_samples_from_images(images: Any) -> list[dict]:
    """One sample dict per image, holding the image under 'image' and nothing else.

    Parameters
    ----------
    images : numpy.ndarray or sequence of numpy.ndarray
        One HALCON-layout image (H x W or H x W x C, any pixel type) or a list of them
        (HALCON's image tuple). The images are not copied.

    Returns
    -------
    list of dict
        ``[{'image': image}, ...]`` in the order of ``images``.

    Raises
    ------
    HOperatorError
        1501 for an empty list; 1201 for something that is not an image array.
    """
    operator = "gen_dl_samples_from_images"
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise HOperatorError(ErrorCode.WRONG_OBJECT_COUNT, "Images is empty", operator)
    for index, image in enumerate(items):
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
            what = (f"array of shape {image.shape}" if isinstance(image, np.ndarray)
                    else type(image).__name__)
            raise wrong_type(1, f"Images[{index}] must be an H x W or H x W x C image array, "
                             f"got {what}", operator)
    return [{"image": image} for image in items]


# --- parameters ------------------------------------------------------------------------------

def create_dl_preprocess_param(
    dl_model_type: str,
    image_width: int,
    image_height: int,
    image_num_channels: int,
    image_range_min: float,
    image_range_max: float,
    normalization_type: str = "none",
    domain_handling: str = "full_domain",
    ignore_class_ids: Any = (),
    set_background_id: Any = (),
    class_ids_background: Any = (),
    gen_param: Any = None,
) -> dict:
    """The preprocessing parameters as a dict (HALCON's create_dl_preprocess_param).

    Parameters
    ----------
    dl_model_type : {'classification'}
    image_width, image_height : int
        Size the images are resized to (>= 1).
    image_num_channels : int
        Channel count the images are converted to (1 <-> 3 conversion; any other count must
        match the images).
    image_range_min, image_range_max : float
        Grey value range the model expects (min < max).
    normalization_type : {'none', 'all_channels', 'first_channel', 'constant_values'}
    domain_handling : {'full_domain', 'crop_domain', 'keep_domain'}
        Accepted for HALCON compatibility; numpy images have no domain, so all three treat
        the whole image.
    ignore_class_ids, set_background_id, class_ids_background
        Segmentation settings; stored, unused for classification.
    gen_param : dict, None or empty sequence
        'mean_values_normalization' and 'deviation_values_normalization' (one value, or one
        per channel; required for 'constant_values'), 'augmentation' ('false'),
        'check_params' ('true' or 'false').

    Returns
    -------
    dict
        Keys model_type, image_width, image_height, image_num_channels, image_range_min,
        image_range_max, normalization_type, domain_handling, ignore_class_ids,
        set_background_id, class_ids_background, then the GenParam entries.

    Raises
    ------
    HOperatorError
        120n / 130n / 140n (n = the parameter's position, 1..12) for a wrong type, value or
        number of values; e.g. 1302 for a width < 1, 1306 for max <= min, 1307 for an unknown
        normalisation type, 1312 for a GenParam problem.
    """
    op = _CREATE
    params = {
        "model_type": _choice(dl_model_type, 1, "DLModelType", MODEL_TYPES, op),
        "image_width": _positive_int(image_width, 2, "ImageWidth", op),
        "image_height": _positive_int(image_height, 3, "ImageHeight", op),
        "image_num_channels": _positive_int(image_num_channels, 4, "ImageNumChannels", op),
        "image_range_min": _real(image_range_min, 5, "ImageRangeMin", op),
        "image_range_max": _real(image_range_max, 6, "ImageRangeMax", op),
        "normalization_type": _choice(normalization_type, 7, "NormalizationType",
                                      NORMALIZATION_TYPES, op),
        "domain_handling": _choice(domain_handling, 8, "DomainHandling", DOMAIN_HANDLING, op),
        "ignore_class_ids": _tuple(ignore_class_ids),
        "set_background_id": _tuple(set_background_id),
        "class_ids_background": _tuple(class_ids_background),
    }
    if params["image_range_max"] <= params["image_range_min"]:
        raise wrong_value(6, f"ImageRangeMax ({params['image_range_max']}) must be greater "
                          f"than ImageRangeMin ({params['image_range_min']})", op)
    params.update(_gen_params(gen_param, params, 12, op))
    return params


def create_dl_preprocess_param_from_model(
    dlmodel_handle: Model,
    normalization_type: str = "none",
    domain_handling: str = "full_domain",
    set_background_id: Any = (),
    class_ids_background: Any = (),
    gen_param: Any = None,
) -> dict:
    """Preprocessing parameters for a model (HALCON's create_dl_preprocess_param_from_model).

    Takes type, image_width, image_height, image_num_channels, image_range_min and
    image_range_max from the model and otherwise works as
    :func:`create_dl_preprocess_param`.

    Raises
    ------
    HOperatorError
        2450 bad handle; 1302 / 1303 bad normalisation type or domain handling; 1306 bad
        GenParam; 1301 for a model that is not a classifier.
    """
    op = _FROM_MODEL
    if not isinstance(dlmodel_handle, Model):
        raise HOperatorError(ErrorCode.UNKNOWN_HANDLE,
                             "DLModelHandle must be a model from read_dl_model, got "
                             f"{type(dlmodel_handle).__name__}", op)
    dlmodel_handle.ensure_usable(op)
    model_type = dlmodel_handle.info.model_type
    if model_type not in MODEL_TYPES:
        raise wrong_value(1, f"model type {model_type!r} is not supported; only "
                          f"{list(MODEL_TYPES)}", op)
    p = dlmodel_handle.params
    normalization_type = _choice(normalization_type, 2, "NormalizationType",
                                 NORMALIZATION_TYPES, op)
    domain_handling = _choice(domain_handling, 3, "DomainHandling", DOMAIN_HANDLING, op)
    extra = _gen_params(gen_param, {"image_num_channels": p.image_num_channels,
                                    "normalization_type": normalization_type}, 6, op)
    return create_dl_preprocess_param(
        model_type, p.image_width, p.image_height, p.image_num_channels, p.image_range_min,
        p.image_range_max, normalization_type, domain_handling, (), set_background_id,
        class_ids_background, extra)


# --- preprocessing ---------------------------------------------------------------------------

def preprocess_dl_samples(dlsample_batch: Any, dlpreprocess_param: Any) -> None:
    """Preprocess the samples' images in place (HALCON's preprocess_dl_samples).

    Each sample's 'image' is replaced by the preprocessed float32 image (steps in the module
    docstring); other keys are left alone. Like HALCON's procedure, nothing is returned:
    sample dicts are handles and are changed where they are.

    Parameters
    ----------
    dlsample_batch : dict or sequence of dict
        Samples with an 'image' entry (uint8, uint16 or real; H x W or H x W x C with 1 to 4
        channels).
    dlpreprocess_param : dict
        From :func:`create_dl_preprocess_param` or
        :func:`create_dl_preprocess_param_from_model`.

    Raises
    ------
    HOperatorError
        1201 samples are not dicts; 1202 parameters not a dict; 2894 a sample without
        'image' or parameters without a required key; 1302 an invalid parameter value;
        9001 an image of an unsupported pixel type; 9004 an empty image; 1301 an image whose
        channels cannot be converted. Nothing is changed when any sample fails.
    """
    op = _PREPROCESS
    samples = _samples(dlsample_batch, op)
    params = _checked_params(dlpreprocess_param, op)
    processed = [preprocess_image(_sample_image(sample, index, op), params, op)
                 for index, sample in enumerate(samples)]
    for sample, image in zip(samples, processed, strict=True):
        sample["image"] = image


def preprocess_image(image: np.ndarray, params: Mapping, operator: str = _PREPROCESS
                     ) -> np.ndarray:
    """One image through channel conversion, resizing and grey value mapping (float32)."""
    kind = _pixel_kind(image, operator)
    data = np.asarray(image, np.float64)
    data = data[:, :, None] if data.ndim == 2 else data
    data = convert_channels(data, int(params["image_num_channels"]), operator)
    data = resize(data, int(params["image_width"]), int(params["image_height"]))
    data = map_grey_values(data, kind, params)
    out = data.astype(np.float32)
    return out[:, :, 0] if out.shape[2] == 1 else out


def convert_channels(image: np.ndarray, channels: int, operator: str = _PREPROCESS
                     ) -> np.ndarray:
    """H x W x C float image with ``channels`` channels (alpha dropped, 1 <-> 3 converted)."""
    have = image.shape[2]
    if have in (2, 4):  # grey + alpha, colour + alpha
        image = image[:, :, : have - 1]
        have -= 1
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if have == 3 and channels == 1:
        return (image @ np.asarray(GREY_WEIGHTS))[:, :, None]
    raise wrong_value(1, f"cannot convert an image with {image.shape[2]} channels to "
                      f"{channels} channels (only 1 <-> 3, alpha dropped)", operator)


def map_grey_values(image: np.ndarray, kind: str, params: Mapping) -> np.ndarray:
    """Grey values of an H x W x C float64 image by normalisation type (see module doc).

    ``kind`` is the source pixel type: 'uint8', 'uint16' or 'real'.
    """
    low, high = float(params["image_range_min"]), float(params["image_range_max"])
    method = params["normalization_type"]
    if method == "none":
        if kind == "real":
            return image
        full_scale = 255.0 if kind == "uint8" else 65535.0
        return low + image * ((high - low) / full_scale)
    if method == "constant_values":
        channels = image.shape[2]
        mean = _per_channel(params["mean_values_normalization"], channels)
        deviation = _per_channel(params["deviation_values_normalization"], channels)
        return (image - mean) / deviation
    source = image[:, :, :1] if method == "first_channel" else image
    smallest, largest = float(source.min()), float(source.max())
    if largest == smallest:  # nothing to stretch: the middle of the range
        return np.full_like(image, (low + high) / 2)
    return low + (image - smallest) * ((high - low) / (largest - smallest))


# --- validation helpers ----------------------------------------------------------------------

def _tuple(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return value.ravel().tolist()
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _choice(value: Any, position: int, name: str, allowed: Sequence[str], op: str) -> str:
    value = single(value)
    if isinstance(value, (list, tuple)):
        raise wrong_count(position, f"{name} takes one value, got {len(value)}", op)
    if not isinstance(value, str):
        raise wrong_type(position, f"{name} must be a string, got {value!r}", op)
    if value not in allowed:
        raise wrong_value(position, f"{name} {value!r} is not one of {list(allowed)}", op)
    return value


def _positive_int(value: Any, position: int, name: str, op: str) -> int:
    value = single(value)
    if isinstance(value, (list, tuple)):
        raise wrong_count(position, f"{name} takes one value, got {len(value)}", op)
    if not is_integer(value):
        raise wrong_type(position, f"{name} must be an integer, got {value!r}", op)
    if value < 1:
        raise wrong_value(position, f"{name} must be >= 1, got {value}", op)
    return int(value)


def _real(value: Any, position: int, name: str, op: str) -> float:
    value = single(value)
    if isinstance(value, (list, tuple)):
        raise wrong_count(position, f"{name} takes one value, got {len(value)}", op)
    if not is_real(value):
        raise wrong_type(position, f"{name} must be a number, got {value!r}", op)
    if not np.isfinite(value):
        raise wrong_value(position, f"{name} must be finite, got {value}", op)
    return float(value)


def _gen_params(gen_param: Any, params: dict, position: int, op: str) -> dict:
    """GenParam entries, checked; 'constant_values' needs means and deviations."""
    if gen_param is None or (isinstance(gen_param, (list, tuple)) and not gen_param):
        gen_param = {}
    gen_param = single(gen_param)
    if not isinstance(gen_param, Mapping):
        raise wrong_type(position, f"GenParam must be a dict, got {type(gen_param).__name__}",
                         op)
    unknown = sorted(set(gen_param) - set(GEN_PARAM_KEYS))
    if unknown:
        raise wrong_value(position, f"unknown GenParam keys {unknown}; known: "
                          f"{list(GEN_PARAM_KEYS)}", op)
    out: dict[str, Any] = {}
    for key in ("augmentation", "check_params"):
        if key in gen_param:
            out[key] = _choice(gen_param[key], position, key, ("true", "false"), op)
    if out.get("augmentation") == "true":
        raise wrong_value(position, "augmentation is not supported for inference", op)
    for key in ("mean_values_normalization", "deviation_values_normalization"):
        if key in gen_param:
            out[key] = _real_list(gen_param[key], key, params["image_num_channels"], position, op)
    if params["normalization_type"] == "constant_values":
        for key in ("mean_values_normalization", "deviation_values_normalization"):
            if key not in out:
                raise wrong_value(position, f"normalization_type 'constant_values' needs "
                                  f"GenParam {key!r}", op)
    return out


def _real_list(value: Any, key: str, channels: int, position: int, op: str) -> list[float]:
    values = _tuple(value)
    if len(values) not in (1, channels):
        raise wrong_count(position, f"{key} takes 1 or {channels} values, got {len(values)}", op)
    if not all(is_real(v) and np.isfinite(v) for v in values):
        raise wrong_type(position, f"{key} must be finite numbers, got {values!r}", op)
    if key.startswith("deviation") and any(v == 0 for v in values):
        raise wrong_value(position, f"{key} must not contain 0, got {values!r}", op)
    return [float(v) for v in values]


def _per_channel(values: Any, channels: int) -> np.ndarray:
    values = np.asarray(_tuple(values), np.float64)
    return np.broadcast_to(values, (channels,)) if values.size == 1 else values


def _samples(batch: Any, op: str) -> list[MutableMapping]:
    if isinstance(batch, MutableMapping):
        return [batch]
    if not isinstance(batch, (list, tuple)) or not batch:
        raise wrong_type(1, "DLSampleBatch must be a dict or a non-empty list of dicts, got "
                         f"{type(batch).__name__}", op)
    for index, sample in enumerate(batch):
        if not isinstance(sample, MutableMapping):
            raise wrong_type(1, f"DLSampleBatch[{index}] is {type(sample).__name__}, not a "
                             "dict", op)
    return list(batch)


def _checked_params(params: Any, op: str) -> dict:
    params = single(params)
    if not isinstance(params, Mapping):
        raise wrong_type(2, f"DLPreprocessParam must be a dict, got {type(params).__name__}", op)
    for key in PARAM_KEYS:
        if key not in params:
            raise HOperatorError(ErrorCode.DICT_KEY_MISSING,
                                 f"DLPreprocessParam has no key {key!r}", op)
    # Re-check the values: the dict may have been edited after it was created.
    try:
        return create_dl_preprocess_param(
            *(params[key] for key in PARAM_KEYS), (), (), (),
            {key: params[key] for key in GEN_PARAM_KEYS if key in params})
    except HOperatorError as exc:
        raise wrong_value(2, f"DLPreprocessParam: {exc.extended_message}", op) from exc


def _sample_image(sample: Mapping, index: int, op: str) -> np.ndarray:
    if "image" not in sample:
        raise HOperatorError(ErrorCode.DICT_KEY_MISSING, f"sample {index} has no key 'image'", op)
    image = sample["image"]
    if not isinstance(image, np.ndarray):
        raise wrong_type(1, f"sample {index}: 'image' must be an image array, got "
                         f"{type(image).__name__}", op)
    if image.ndim not in (2, 3) or image.size == 0:
        raise HOperatorError(ErrorCode.WRONG_IMAGE_SIZE,
                             f"sample {index}: image of shape {image.shape}",
                             op)
    if image.ndim == 3 and image.shape[2] > 4:
        raise wrong_value(1, f"sample {index}: {image.shape[2]} channels (1 to 4 supported)", op)
    _pixel_kind(image, op, index)
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise wrong_value(1, f"sample {index}: image contains NaN or Inf", op)
    return image


def _pixel_kind(image: np.ndarray, op: str, index: int | None = None) -> str:
    if image.dtype == np.uint8:
        return "uint8"
    if image.dtype == np.uint16:
        return "uint16"
    if image.dtype.kind == "f":
        return "real"
    where = f"sample {index}: " if index is not None else ""
    raise HOperatorError(ErrorCode.WRONG_GREY_TYPE,
                         f"{where}pixel type {image.dtype} is not supported "
                         "(uint8, uint16 or real)", op)
