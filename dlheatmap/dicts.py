"""HALCON's dictionary operators working on plain Python dicts.

In HALCON a dictionary is a handle; here it is a ``dict``, changed in place exactly as a
handle's contents would be. Values follow one rule (dlheatmap's decision, see
``spec/decisions-workflow.md``): a numpy array is an iconic object (an image), anything else is
a tuple. Tuples of one element are stored as that element, so that plain-Python code reading
the dict sees ``5`` rather than ``[5]``; ``get_dict_tuple`` always returns a list again.
"""

from __future__ import annotations

import builtins
import numbers
from typing import Any

import numpy as np

from dlheatmap.errors import ErrorCode, HOperatorError, wrong_type, wrong_value

DICT_PARAMS = ("keys", "key_exists", "key_data_type")


def create_dict() -> dict:
    """A new empty dictionary (HALCON's create_dict)."""
    return {}


def set_dict_tuple(dict_handle: dict, key: Any, tuple: Any) -> None:
    """Store a tuple under ``key`` (HALCON's set_dict_tuple).

    Parameters
    ----------
    dict_handle : dict
    key : str or int
    tuple : value or sequence of values
        Numbers, strings, dicts or other handles; a numpy array is stored as the flat list of
        its values. A one-element sequence is stored as its element.

    Raises
    ------
    HOperatorError
        2450 ``dict_handle`` is not a dict; 1202 / 1302 bad key.
    """
    operator = "set_dict_tuple"
    handle = _handle(dict_handle, operator)
    name = _key(key, 2, operator)
    value = tuple  # HALCON's parameter name shadows the builtin
    if isinstance(value, np.ndarray):
        value = value.ravel().tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, builtins.tuple)):
        handle[name] = value[0] if len(value) == 1 else list(value)
    else:
        handle[name] = value


def get_dict_tuple(dict_handle: dict, key: Any) -> list:
    """The tuple stored under ``key``, as a list (HALCON's get_dict_tuple).

    Raises
    ------
    HOperatorError
        2450 not a dict; 1202 / 1302 bad key; 2894 key missing; 2896 the key holds an
        object (use get_dict_object).
    """
    operator = "get_dict_tuple"
    value = _value(dict_handle, key, operator)
    if isinstance(value, np.ndarray):
        raise HOperatorError(ErrorCode.DICT_TUPLE_TYPE, f"key {key!r} holds an object, not a tuple "
                             "(use get_dict_object)", operator)
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def get_dict_tuple_s(dict_handle: dict, key: Any) -> Any:
    """The single value stored under ``key``; 2895 if the tuple has not exactly one element."""
    values = get_dict_tuple(dict_handle, key)
    if len(values) != 1:
        raise HOperatorError(ErrorCode.DICT_TUPLE_LENGTH,
                             f"key {key!r} holds {len(values)} values, not one",
                             "get_dict_tuple_s")
    return values[0]


def set_dict_object(object: Any, dict_handle: dict, key: Any) -> None:
    """Store an iconic object (an image array) under ``key`` (HALCON's set_dict_object).

    Raises
    ------
    HOperatorError
        1201 ``object`` is not a numpy array (or a list of them); 2450 not a dict; 1202 / 1302
        bad key.
    """
    operator = "set_dict_object"
    handle = _handle(dict_handle, operator)
    name = _key(key, 2, operator)
    items = object if isinstance(object, list) else [object]
    if not items or not all(isinstance(item, np.ndarray) for item in items):
        raise wrong_type(1, f"Object must be an image array, got {type(object).__name__}",
                         operator)
    handle[name] = object


def get_dict_object(dict_handle: dict, key: Any) -> Any:
    """The object stored under ``key`` (HALCON's get_dict_object).

    Raises
    ------
    HOperatorError
        2450 not a dict; 1202 / 1302 bad key; 2894 key missing; 2896 the key holds a tuple.
    """
    operator = "get_dict_object"
    value = _value(dict_handle, key, operator)
    is_object = isinstance(value, np.ndarray) or (
        isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value))
    if not is_object:
        raise HOperatorError(ErrorCode.DICT_TUPLE_TYPE, f"key {key!r} holds a tuple, not an object "
                             "(use get_dict_tuple)", operator)
    return value


def get_dict_param(dict_handle: dict, gen_param_name: str, key: Any = ()) -> list:
    """Information about a dictionary (HALCON's get_dict_param).

    Parameters
    ----------
    dict_handle : dict
    gen_param_name : {'keys', 'key_exists', 'key_data_type'}
    key : str, int or sequence of them
        Empty for 'keys'.

    Returns
    -------
    list
        'keys': all keys in insertion order; 'key_exists': 1 or 0 per key; 'key_data_type':
        'object', 'dict' (a single dict), 'handle' (another handle, such as a model) or 'tuple'
        per key (missing keys: 2894).

    Raises
    ------
    HOperatorError
        2450 not a dict; 1202 / 1302 bad parameter name; 1203 / 1303 bad key.
    """
    operator = "get_dict_param"
    handle = _handle(dict_handle, operator)
    if isinstance(gen_param_name, (list, tuple)) and len(gen_param_name) == 1:
        gen_param_name = gen_param_name[0]
    if not isinstance(gen_param_name, str):
        raise wrong_type(2, f"GenParamName must be a string, got {gen_param_name!r}", operator)
    if gen_param_name not in DICT_PARAMS:
        raise wrong_value(2, f"GenParamName {gen_param_name!r} is not one of "
                          f"{list(DICT_PARAMS)}", operator)
    if gen_param_name == "keys":
        return list(handle)
    keys = list(key) if isinstance(key, (list, tuple)) else [key]
    names = [_key(k, 3, operator) for k in keys]
    if gen_param_name == "key_exists":
        return [int(name in handle) for name in names]
    types = []
    for name in names:
        if name not in handle:
            raise HOperatorError(ErrorCode.DICT_KEY_MISSING,
                                 f"no key {name!r} in the dictionary", operator)
        types.append(_data_type(handle[name]))
    return types


def get_dict_param_s(dict_handle: dict, gen_param_name: str, key: Any = ()) -> Any:
    """get_dict_param for a single result value; 2895 if there is not exactly one."""
    values = get_dict_param(dict_handle, gen_param_name, key)
    if len(values) != 1:
        raise HOperatorError(ErrorCode.DICT_TUPLE_LENGTH,
                             f"{len(values)} values, not one", "get_dict_param_s")
    return values[0]


def remove_dict_key(dict_handle: dict, key: Any) -> None:
    """Remove ``key`` and its value; missing keys are ignored (HALCON's remove_dict_key)."""
    operator = "remove_dict_key"
    handle = _handle(dict_handle, operator)
    keys = list(key) if isinstance(key, (list, tuple)) else [key]
    for name in (_key(k, 2, operator) for k in keys):
        handle.pop(name, None)


# --- helpers ---------------------------------------------------------------------------------

def _handle(value: Any, operator: str) -> dict:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]  # a handle passed as a one-element HALCON tuple
    if not isinstance(value, dict):
        raise HOperatorError(ErrorCode.UNKNOWN_HANDLE, f"DictHandle must be a dict, got "
                             f"{type(value).__name__}", operator)
    return value


def _key(key: Any, position: int, operator: str) -> str | int:
    if isinstance(key, (list, tuple)):
        if len(key) != 1:
            raise wrong_value(position, f"Key takes one key, got {len(key)}", operator)
        key = key[0]
    if isinstance(key, np.generic):
        key = key.item()
    if isinstance(key, str):
        if not key:
            raise wrong_value(position, "Key must not be empty", operator)
        return key
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return int(key)
    raise wrong_type(position, f"Key must be a string or an integer, got {key!r}", operator)


def _value(dict_handle: Any, key: Any, operator: str) -> Any:
    handle = _handle(dict_handle, operator)
    name = _key(key, 2, operator)
    if name not in handle:
        raise HOperatorError(ErrorCode.DICT_KEY_MISSING,
                             f"no key {name!r} in the dictionary", operator)
    return handle[name]


def _data_type(value: Any) -> str:
    if isinstance(value, np.ndarray) or (
            isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value)):
        return "object"
    if isinstance(value, dict):
        return "dict"
    if value is None or isinstance(value, (numbers.Number, str, list, tuple)):
        return "tuple"
    return "handle"
