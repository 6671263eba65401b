"""Argument checks shared by the operators."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dlheatmap.errors import HOperatorError, wrong_count, wrong_type
from dlheatmap.model import UNKNOWN_HANDLE, Model
from dlheatmap.params import ModelParams

UNSUPPORTED_MODEL = 7912


def model_handle(handle: Any, operator: str) -> Model:
    """``handle`` as a usable Model, else HALCON error 2450."""
    if not isinstance(handle, Model):
        raise HOperatorError(
            UNKNOWN_HANDLE, f"expected a DL model handle, got {type(handle).__name__}", operator)
    handle.ensure_usable(operator)
    return handle


def classification_model(model: Model, code: int, operator: str) -> None:
    if model.info.model_type != "classification":
        raise HOperatorError(
            code,
            f"model type is {model.info.model_type!r}; only 'classification' models (one image "
            "input, one [batch, classes] output) are supported",
            operator,
        )


def string_arg(value: Any, position: int, name: str, operator: str) -> str:
    """A single string (a one-element sequence of one is accepted, as HALCON tuples are)."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, (list, tuple)):
        raise wrong_count(position, f"{name} takes a single string", operator)
    if not isinstance(value, str):
        raise wrong_type(position, f"{name} must be a string, got {type(value).__name__}",
                         operator)
    return value


def is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def empty_tuple(value: Any) -> bool:
    """HALCON's empty tuple: None, [] or ()."""
    return value is None or (
        isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 0
    )


def sorted_results(probabilities: np.ndarray, params: ModelParams) -> list[dict]:
    """apply_dl_model's classification result dicts, all classes, best first."""
    results = []
    for row in probabilities:
        order = np.argsort(-row, kind="stable")
        results.append({
            "classification_class_ids": [params.class_ids[i] for i in order],
            "classification_class_names": [params.class_names[i] for i in order],
            "classification_confidences": [float(row[i]) for i in order],
        })
    return results


def as_mapping(value: Any) -> Mapping | None:
    return value if isinstance(value, Mapping) else None
