"""Model parameters: their values on a freshly read model and validation of new values.

What each parameter is, its type, allowed values and whether it may be set all come from
``spec/operators.toml``; this module applies those rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from dlheatmap.errors import ErrorCode, HOperatorError, wrong_count, wrong_type, wrong_value
from dlheatmap.graph import GraphInfo
from dlheatmap.runtime.devices import DLDevice
from dlheatmap.spec import ParameterSpec, load_spec
from dlheatmap.values import is_integer, is_real

DEFAULT_IMAGE_SIZE = 224
DEFAULT_CHANNELS = 3


@dataclass(frozen=True)
class ModelParams:
    """The settable state of a model handle; replaced as a whole, never mutated."""

    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    image_width: int
    image_height: int
    image_num_channels: int
    image_range_min: float
    image_range_max: float
    batch_size: int
    runtime: str
    gpu: int

    @cached_property
    def class_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """class_ids (int64) and class_names (object) as arrays, for building result dicts
        (made once per parameter set, not once per call)."""
        return (np.array(self.class_ids, dtype=np.int64),
                np.array(self.class_names, dtype=object))

    @cached_property
    def class_index(self) -> dict[int, int]:
        """Output index of each class ID (made once per parameter set)."""
        return {class_id: index for index, class_id in enumerate(self.class_ids)}


def default_params(info: GraphInfo) -> ModelParams:
    """The parameters of a freshly read model, taken from the graph where it says them."""
    spec = load_spec().parameters
    image = info.image_input
    num_classes = info.num_classes or 0
    class_ids = tuple(range(num_classes))
    names = info.metadata_class_names or [str(i) for i in class_ids]
    return ModelParams(
        class_ids=class_ids,
        class_names=tuple(names),
        image_width=(image and image.width) or DEFAULT_IMAGE_SIZE,
        image_height=(image and image.height) or DEFAULT_IMAGE_SIZE,
        image_num_channels=(image and image.channels) or DEFAULT_CHANNELS,
        image_range_min=float(spec["image_range_min"].default),
        image_range_max=float(spec["image_range_max"].default),
        batch_size=(image and image.batch) or 1,
        runtime=spec["runtime"].default,
        gpu=int(spec["gpu"].default),
    )


_DIMENSIONS = ("image_width", "image_height", "image_num_channels")

# Where each settable parameter's value lives in the graph when the file fixes it.
_GRAPH_DIMS = {
    "image_width": "width",
    "image_height": "height",
    "image_num_channels": "channels",
    "batch_size": "batch",
}


def is_settable(spec: ParameterSpec, info: GraphInfo) -> bool:
    if spec.settable == "always":
        return True
    if spec.settable == "never" or info.image_input is None:
        return False
    if spec.name == "image_dimensions":  # settable where any part is; fixed parts must stay
        return any(is_settable(load_spec().parameters[name], info) for name in _DIMENSIONS)
    return getattr(info.image_input, _GRAPH_DIMS[spec.name]) is None


def validate_value(
    name: str, value: Any, info: GraphInfo, params: ModelParams, operator: str, position: int
) -> dict[str, Any]:
    """Check ``value`` for parameter ``name``; return the ModelParams fields to replace.

    Raises HOperatorError with 120n (type), 130n (value), 140n (count), 7788 (read-only) or
    7792 (duplicate class IDs), n being ``position``.
    """
    spec = load_spec().parameters[name]
    if not is_settable(spec, info):
        raise HOperatorError(ErrorCode.PARAM_NOT_AVAILABLE,
                             f"parameter {name!r} cannot be set on this model", operator)
    values = [_checked(spec, item, operator, position)
              for item in _as_values(spec, value, operator, position)]
    expected = spec.count or (len(params.class_ids) if name.startswith("class_") else None)
    if spec.multiple and expected is not None and len(values) != expected:
        raise wrong_count(
            position, f"{name} needs {expected} values, got {len(values)}", operator
        )
    if name == "class_ids" and len(set(values)) != len(values):
        raise HOperatorError(ErrorCode.CLASS_IDS_NOT_UNIQUE,
                             f"class_ids {short_repr(values)} repeat an ID",
                             operator)
    if name == "device":  # a device is a runtime and a GPU number
        (device,) = values
        return {"runtime": device.kind, "gpu": device.index}
    if name == "image_dimensions":
        changes = dict(zip(_DIMENSIONS, values, strict=True))
        _keep_fixed_dimensions(changes, info, params, operator)
        return changes
    if name in _RANGE:
        _keep_range_ordered(name, values[0], params, operator, position)
    if spec.multiple:
        return {name: tuple(values)}
    return {name: values[0]}


_RANGE = ("image_range_min", "image_range_max")


def _keep_range_ordered(
    name: str, value: float, params: ModelParams, operator: str, position: int
) -> None:
    """image_range_min must stay below image_range_max: preprocessing maps grey values onto
    that interval, and refusing here names the call that broke it, not a later one."""
    low = value if name == "image_range_min" else params.image_range_min
    high = value if name == "image_range_max" else params.image_range_max
    if low >= high:
        raise wrong_value(
            position, f"{name}: image_range_min ({low:g}) must be below image_range_max "
            f"({high:g})", operator)


def _keep_fixed_dimensions(
    changes: dict[str, Any], info: GraphInfo, params: ModelParams, operator: str
) -> None:
    """image_dimensions may restate, but not change, a dimension that the file fixes."""
    for part, value in changes.items():
        if value != getattr(params, part) and not is_settable(load_spec().parameters[part], info):
            raise HOperatorError(
                ErrorCode.PARAM_NOT_AVAILABLE,
f"image_dimensions: {part} is fixed to {getattr(params, part)} by the "
                f"ONNX file, got {value}", operator)


def _as_values(spec: ParameterSpec, value: Any, operator: str, position: int) -> list[Any]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not spec.multiple and len(values) != 1:
        raise wrong_count(
            position, f"{spec.name} takes a single value, got {len(values)}", operator)
    return values


def _checked(spec: ParameterSpec, item: Any, operator: str, position: int) -> Any:
    """One value of ``spec``'s type, within its bounds, as it is stored."""
    if not _has_type(item, spec.value_type):
        raise wrong_type(
            position, f"{spec.name} takes {spec.value_type} values, got {short_repr(item)}",
            operator)
    if spec.values is not None and item not in spec.values:
        raise wrong_value(
            position, f"{spec.name} must be one of {list(spec.values)}, got {short_repr(item)}",
            operator)
    if spec.min is not None and item < spec.min:
        raise wrong_value(
            position, f"{spec.name} must be >= {spec.min}, got {short_repr(item)}", operator)
    if spec.max is not None and item > spec.max:
        raise wrong_value(
            position, f"{spec.name} must be <= {spec.max}, got {short_repr(item)}", operator)
    if spec.value_type == "real":
        return _finite_float(spec.name, item, operator, position)
    return normalise_value(item)


def _finite_float(name: str, item: Any, operator: str, position: int) -> float:
    """A real number (int, float, Fraction, numpy scalar) as the float it is stored as.

    NaN, infinities and numbers beyond float's range (10**400) have no such float: 1303.
    """
    try:
        number = float(item)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise wrong_value(
            position, f"{name} must be a finite number within float's range, got "
            f"{short_repr(item)}", operator)
    return number


def short_repr(value: Any) -> str:
    """``repr`` for messages, short; Python refuses to print integers of over 4300 digits."""
    try:
        text = repr(value)
    except ValueError:
        return f"<{type(value).__name__} too large to print>"
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _has_type(item: Any, value_type: str) -> bool:
    if value_type == "integer":
        return is_integer(item)
    if value_type == "real":
        return is_real(item)
    if value_type == "device":
        return isinstance(item, DLDevice)
    return isinstance(item, str)


def normalise_value(value: Any) -> Any:
    """numpy scalars to Python scalars, so stored parameters compare and print plainly."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Sequence) and not isinstance(value, str):
        return type(value)(normalise_value(item) for item in value)
    return value
