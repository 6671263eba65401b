"""HALCON's value predicates, shared by every module that checks arguments: what counts as an
integer, a real number, an empty tuple, and a one-element tuple's value."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np


def is_integer(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """A real number (int, float, Fraction, numpy scalar), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def empty_tuple(value: Any) -> bool:
    """HALCON's empty tuple: None, [] or ()."""
    return value is None or (
        isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 0
    )


def single(value: Any) -> Any:
    """A HALCON tuple of one element is that element (lists, tuples, 1-element 1-D arrays)."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.size == 1:
        value = value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    return value
