"""HALCON samples (plain dicts) to batches of images, with HALCON's validation codes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dlheatmap.errors import ErrorCode, HOperatorError, wrong_count, wrong_type, wrong_value
from dlheatmap.params import ModelParams
from dlheatmap.spec import load_spec


def as_sample_list(samples: Any, operator: str, position: int) -> list[Mapping]:
    """One dict or a sequence of dicts, as a list of dicts."""
    name = _parameter_name(operator, position)
    if isinstance(samples, Mapping):
        return [samples]
    if not isinstance(samples, Sequence) or isinstance(samples, (str, bytes)):
        raise wrong_type(
            position, f"{name} must be a dict or a sequence of dicts, got {_kind(samples)}",
            operator)
    if len(samples) == 0:
        raise wrong_count(position, f"{name} is empty: no samples given", operator)
    for index, sample in enumerate(samples):
        if not isinstance(sample, Mapping):
            raise wrong_type(
                position, f"{name}: sample {index} is {_kind(sample)}, not a dict", operator)
    return list(samples)


def images_from_samples(
    samples: list[Mapping], params: ModelParams, operator: str, position: int
) -> np.ndarray:
    """Stack the samples' images into one new N x H x W x C float32 array.

    Images must be real-valued numpy arrays of image_height x image_width (x channels),
    finite everywhere. Every image's type and shape are checked before any pixel is (7783 and
    wrong shapes before NaN). The samples themselves are never modified.
    """
    expected = (params.image_height, params.image_width, params.image_num_channels)
    # Validate every image before allocating the batch: a wrong call must not first try to
    # allocate image_height x image_width of a (possibly huge) model input.
    name = _parameter_name(operator, position)
    images = [_image(sample, f"{name}: sample {index}", expected, operator, position)
              for index, sample in enumerate(samples)]
    batch = np.empty((len(samples), *expected), np.float32)
    for index, image in enumerate(images):
        if image.dtype == np.float32:
            batch[index] = image
        else:
            with np.errstate(over="ignore"):  # float64 beyond float32's range: refused below
                batch[index] = image
        # One pass over the converted pixels finds NaN and Inf, and float64 values that
        # overflowed float32; only then is the original looked at, for the message.
        if not np.isfinite(batch[index]).all():
            problem = ("contains NaN or Inf" if not np.isfinite(image).all()
                       else "values exceed the float32 range")
            raise wrong_value(position, f"{name}: sample {index}: image {problem}", operator)
    return batch


def _image(sample: Mapping, where: str, expected: tuple, operator: str, position: int):
    """The sample's image, checked; ``where`` names it in messages ('DLSample: sample 0')."""
    if "image" not in sample:
        raise HOperatorError(ErrorCode.INPUTS_MISSING, f"{where} has no 'image' entry", operator)
    image = sample["image"]
    if not isinstance(image, np.ndarray):
        raise wrong_type(
            position, f"{where}: 'image' must be a numpy array, got {_kind(image)}",
            operator)
    image = np.asarray(image)  # subclasses (np.matrix) would not take a channel axis
    if not np.issubdtype(image.dtype, np.floating):
        raise wrong_value(
            position,
            f"{where}: image type {image.dtype} is not real; convert it "
            "(preprocess_dl_samples does) to float32",
            operator,
        )
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape != expected:
        raise wrong_value(
            position,
            f"{where}: image of shape {image.shape} does not match the model's "
            f"height x width x channels {expected}",
            operator,
        )
    return image


def _kind(value: Any) -> str:
    return type(value).__name__


def _parameter_name(operator: str, position: int) -> str:
    """HALCON's name of the samples parameter (DLSample, DLSampleBatch) for messages."""
    entry = load_spec().operators.get(operator.removesuffix("_s"))
    if entry is None or position > len(entry.parameters):
        return "samples"
    return entry.parameters[position - 1]
