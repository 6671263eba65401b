"""Model parameters: their values on a freshly read model and validation of new values.

What each parameter is, its type, allowed values and whether it may be set all come from
``spec/operators.toml``; this module applies those rules.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlheatmap.errors import HOperatorError, wrong_count, wrong_type, wrong_value
from dlheatmap.graph import GraphInfo
from dlheatmap.spec import ParameterSpec, load_spec

DEFAULT_IMAGE_SIZE = 224
DEFAULT_CHANNELS = 3
READ_ONLY = 7788
CLASS_IDS_NOT_UNIQUE = 7792


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
        raise HOperatorError(READ_ONLY, f"parameter {name!r} cannot be set on this model", operator)
    values = _as_values(spec, value, operator, position)
    for item in values:
        _check_item(spec, item, operator, position)
    values = [float(v) if spec.value_type == "real" else normalise_value(v) for v in values]
    expected = spec.count or (len(params.class_ids) if name.startswith("class_") else None)
    if spec.multiple and expected is not None and len(values) != expected:
        raise wrong_count(
            position, f"{name} needs {expected} values, got {len(values)}", operator
        )
    if name == "class_ids" and len(set(values)) != len(values):
        raise HOperatorError(CLASS_IDS_NOT_UNIQUE, f"class_ids {values} repeat an ID", operator)
    if name == "image_dimensions":
        changes = dict(zip(_DIMENSIONS, values, strict=True))
        _keep_fixed_dimensions(changes, info, params, operator)
        return changes
    if spec.multiple:
        return {name: tuple(values)}
    return {name: values[0]}


def _keep_fixed_dimensions(
    changes: dict[str, Any], info: GraphInfo, params: ModelParams, operator: str
) -> None:
    """image_dimensions may restate, but not change, a dimension that the file fixes."""
    for part, value in changes.items():
        if value != getattr(params, part) and not is_settable(load_spec().parameters[part], info):
            raise HOperatorError(
                READ_ONLY, f"image_dimensions: {part} is fixed to {getattr(params, part)} by the "
                f"ONNX file, got {value}", operator)


def _as_values(spec: ParameterSpec, value: Any, operator: str, position: int) -> list[Any]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not spec.multiple and len(values) != 1:
        raise wrong_count(
            position, f"{spec.name} takes a single value, got {len(values)}", operator)
    return values


def _check_item(spec: ParameterSpec, item: Any, operator: str, position: int) -> None:
    if not _has_type(item, spec.value_type):
        raise wrong_type(
            position, f"{spec.name} takes {spec.value_type} values, got {item!r}", operator
        )
    if spec.values is not None and item not in spec.values:
        raise wrong_value(
            position, f"{spec.name} must be one of {list(spec.values)}, got {item!r}", operator
        )
    if spec.min is not None and item < spec.min:
        raise wrong_value(position, f"{spec.name} must be >= {spec.min}, got {item!r}", operator)
    if spec.value_type == "real" and not np.isfinite(item):
        raise wrong_value(position, f"{spec.name} must be finite, got {item!r}", operator)


def _has_type(item: Any, value_type: str) -> bool:
    if isinstance(item, (bool, np.bool_)):
        return False
    if value_type == "integer":
        return isinstance(item, numbers.Integral)
    if value_type == "real":
        return isinstance(item, numbers.Real)
    return isinstance(item, str)


def normalise_value(value: Any) -> Any:
    """numpy scalars to Python scalars, so stored parameters compare and print plainly."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Sequence) and not isinstance(value, str):
        return type(value)(normalise_value(item) for item in value)
    return value
