"""Conformance tests generated from spec/operators.toml.

Every ``[[rules]]`` row becomes one test: the bad call must raise HOperatorError with the row's
HALCON code, name the parameter or value, and leave the handle's parameters and the caller's
arguments as they were. Every ``[parameters.*]`` entry is checked to behave as declared
(settable or read-only, type, allowed values, minimum, count), with "settable" decided from
the ONNX file itself. spec/validation.md must be what the spec generates.
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import dlheatmap as dl
from dlheatmap.errors import ERROR_TEXTS, HOperatorError, error_text
from dlheatmap.spec import load_spec, rules_markdown, spec_path
from tests import conformance_fixtures as cf

SPEC = load_spec()
RULES = SPEC.rules
GENERIC_BASES = (1200, 1300, 1400)


@pytest.fixture
def fixtures(tmp_path) -> cf.Fixtures:
    return cf.Fixtures(tmp_path)


# --- the rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", RULES, ids=[rule["id"] for rule in RULES])
def test_rule(rule: dict, fixtures: cf.Fixtures):
    args = fixtures.call(rule)
    handle = args.get("DLModelHandle")
    params_before = _public_params(handle)
    args_before = _snapshot(args)

    with pytest.raises(HOperatorError) as raised:
        cf.invoke(rule["operator"], args)

    error = raised.value
    assert type(error) is HOperatorError
    assert error.error_code == rule["code"], str(error)
    assert rule["operator"] in error.message
    assert _mention(rule["mentions"], args) in str(error), str(error)
    assert _public_params(handle) == params_before
    _assert_same(args_before, args)


def _mention(text: str, args: dict) -> str:
    """The rule's ``mentions`` with '@Param' / '@Param.key' replaced by the call's value."""
    if not text.startswith("@"):
        return text
    name, _, key = text[1:].partition(".")
    value = args[name]
    return str(value[key] if key else value)


def _public_params(handle: Any) -> dict | None:
    """Every model parameter as get_dl_model_param reports it (None: no usable handle)."""
    if not isinstance(handle, dl.Model) or handle._cleared:
        return None
    return {name: dl.get_dl_model_param(handle, name) for name in SPEC.parameters}


def _snapshot(value: Any) -> Any:
    """A deep copy of the call's arguments (handles and iterators kept by identity)."""
    if isinstance(value, dict):
        return {key: _snapshot(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_snapshot(item) for item in value)
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (str, bytes, int, float, type(None))):
        return copy.copy(value)
    return value  # a Model, a generator: compared by identity


def _assert_same(before: Any, after: Any) -> None:
    if isinstance(before, np.ndarray):
        assert isinstance(after, np.ndarray) and after.dtype == before.dtype
        assert after.shape == before.shape
        if before.dtype.kind in "fc":
            assert np.array_equal(before, after, equal_nan=True)
        else:
            assert np.array_equal(before, after)
        return
    assert type(after) is type(before)
    if isinstance(before, dict):
        assert list(after) == list(before)
        for key in before:
            _assert_same(before[key], after[key])
    elif isinstance(before, (list, tuple)):
        assert len(after) == len(before)
        for item_before, item_after in zip(before, after, strict=True):
            _assert_same(item_before, item_after)
    elif isinstance(before, float) and np.isnan(before):
        assert np.isnan(after)
    elif isinstance(before, (str, bytes, int, float, type(None))):
        assert after == before
    else:
        assert after is before


# --- the rules table is complete and consistent ---------------------------------------------

def test_rule_ids_are_unique_and_named_by_area():
    ids = [rule["id"] for rule in RULES]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", rule_id) for rule_id in ids)


def test_every_rule_names_an_operator_its_parameters_and_defined_fixtures(tmp_path):
    known = cf.Fixtures(tmp_path).names()
    for rule in RULES:
        operator = rule["operator"]
        assert callable(getattr(dl, operator, None)), operator
        base = SPEC.operators[operator.removesuffix("_s")]
        assert set(rule["call"]) <= set(base.parameters), rule["id"]
        assert cf.fixture_names(rule["call"]) <= known, rule["id"]
        assert {"id", "operator", "when", "code", "mentions", "call"} <= set(rule), rule["id"]


def test_every_fixture_is_used_by_a_rule(tmp_path):
    used = set().union(*(cf.fixture_names(rule["call"]) for rule in RULES))
    assert cf.Fixtures(tmp_path).names() == used


def test_every_operator_has_rules():
    covered = {rule["operator"].removesuffix("_s") for rule in RULES}
    assert covered == set(SPEC.operators)


def test_codes_are_halcon_codes_for_the_overridden_parameter():
    """120n/130n/140n must point at a parameter the rule overrides; others must be known."""
    for rule in RULES:
        code = rule["code"]
        base, position = divmod(code, 100)
        if base * 100 in GENERIC_BASES:
            parameters = SPEC.operators[rule["operator"].removesuffix("_s")].parameters
            overridden = {parameters.index(name) + 1 for name in rule["call"]}
            assert position in overridden, rule["id"]
        else:
            assert code in ERROR_TEXTS, rule["id"]
        assert error_text(code) != "HALCON error"


def test_validation_markdown_is_generated_from_the_spec():
    path = spec_path().parent / "validation.md"
    assert path.read_text(encoding="utf-8") == rules_markdown(), (
        "spec/validation.md is out of date: python -m dlheatmap.spec --markdown "
        "> spec/validation.md")
    for rule in RULES:
        assert f"| `{rule['id']}` |" in rules_markdown()


# --- [parameters.*] behave as declared, on a fixed-size and a symbolic-size model ------------

MODELS = {"tiny_fixed_size": cf.tiny_path, "symbolic_size": cf.symbolic_size_path}
# Where each size parameter lives in an NCHW input shape.
_DIM_INDEX = {"batch_size": 0, "image_num_channels": 1, "image_height": 2, "image_width": 3}
_WRONG_TYPE = {"integer": "x", "real": "x", "string": 5, "device": "cpu"}
_PYTHON_TYPE = {"integer": int, "real": float, "string": str, "device": dl.DLDevice}


def _file_facts(path: Path) -> tuple[list[bool], int]:
    """From the ONNX file itself: which input dims are fixed, and the number of classes."""
    model = onnx.load(str(path))
    (image,) = model.graph.input
    fixed = [dim.HasField("dim_value") for dim in image.type.tensor_type.shape.dim]
    classes = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    return fixed, classes


def _expected_settable(name: str, fixed: list[bool]) -> bool:
    setting = SPEC.parameters[name].settable
    if setting != "when_symbolic":
        return setting == "always"
    if name == "image_dimensions":  # settable where any of its parts is
        return any(_expected_settable(part, fixed) for part in
                   ("image_width", "image_height", "image_num_channels"))
    return not fixed[_DIM_INDEX[name]]


PARAMETER_CASES = [(model, name) for model in MODELS for name in SPEC.parameters]


@pytest.mark.parametrize(("model_name", "name"), PARAMETER_CASES,
                         ids=[f"{model}-{name}" for model, name in PARAMETER_CASES])
def test_parameter_behaves_as_declared(model_name: str, name: str):
    path = MODELS[model_name]()
    fixed, classes = _file_facts(path)
    handle = dl.read_dl_model(path)
    entry = SPEC.parameters[name]
    current = dl.get_dl_model_param(handle, name)

    assert isinstance(current, list)
    assert all(type(item) is _PYTHON_TYPE[entry.value_type] for item in current)
    if not entry.multiple:
        assert len(current) == 1
    elif entry.count:
        assert len(current) == entry.count
    elif name.startswith("class_"):
        assert len(current) == classes

    if not _expected_settable(name, fixed):
        _refused(handle, name, current, 7788)
        return
    dl.set_dl_model_param(handle, name, current if entry.multiple else current[0])
    assert dl.get_dl_model_param(handle, name) == current
    _check_values(handle, name, entry, current)


def _check_values(handle: dl.Model, name: str, entry, current: list) -> None:
    def value(items: list):
        return items if entry.multiple else items[0]

    _refused(handle, name, value([_WRONG_TYPE[entry.value_type], *current[1:]]), 1203)
    if entry.multiple:
        _refused(handle, name, current + current[:1], 1403)
    else:
        _refused(handle, name, current + current, 1403)
    for allowed in entry.values or ():
        dl.set_dl_model_param(handle, name, allowed)
        assert dl.get_dl_model_param(handle, name) == [allowed]
    if entry.values:
        _refused(handle, name, "not_" + entry.values[0], 1303)
    if entry.min is not None:
        _check_bound(handle, name, entry, current, int(entry.min), int(entry.min) - 1)
    if entry.max is not None:
        _check_bound(handle, name, entry, current, int(entry.max), int(entry.max) + 1)
    if name == "class_ids":
        dl.set_dl_model_param(handle, name, current[::-1])
        assert dl.get_dl_model_param(handle, name) == current[::-1]
        _refused(handle, name, current[:1] * len(current), 7792)


def _check_bound(handle: dl.Model, name: str, entry, current: list, bound: int,
                 outside: int) -> None:
    """Each value may be ``bound`` (the declared min or max) but not ``outside`` it (1303)."""
    def value(items: list):
        return items if entry.multiple else items[0]

    for index in range(len(current)):
        if name == "image_dimensions" and index == 2:
            continue  # the channel count is fixed on both models
        _refused(handle, name, value(_replaced(current, index, outside)), 1303)
        dl.set_dl_model_param(handle, name, value(_replaced(current, index, bound)))
        assert dl.get_dl_model_param(handle, name) == _replaced(current, index, bound)
        dl.set_dl_model_param(handle, name, value(current))


def _replaced(items: list, index: int, new: Any) -> list:
    return [new if i == index else item for i, item in enumerate(items)]


def _refused(handle: dl.Model, name: str, value: Any, code: int) -> None:
    before = {param: dl.get_dl_model_param(handle, param) for param in SPEC.parameters}
    with pytest.raises(HOperatorError) as raised, warnings.catch_warnings():
        warnings.simplefilter("error")  # a refused value must not even warn
        dl.set_dl_model_param(handle, name, value)
    assert raised.value.error_code == code, str(raised.value)
    assert name in str(raised.value)
    assert {param: dl.get_dl_model_param(handle, param) for param in SPEC.parameters} == before


def test_symbolic_size_model_keeps_its_fixed_channels_in_image_dimensions():
    """image_dimensions on [N, 3, H, W]: width and height change, the channel count may only be
    restated (spec rule param.dimensions_fixed_channels)."""
    handle = dl.read_dl_model(cf.symbolic_size_path())
    dl.set_dl_model_param(handle, "image_dimensions", [16, 12, 3])
    assert dl.get_dl_model_param(handle, "image_width") == [16]
    assert dl.get_dl_model_param(handle, "image_height") == [12]
    results = dl.apply_dl_model(handle, [{"image": np.zeros((12, 16, 3), np.float32)}], [])
    assert len(results[0]["classification_class_ids"]) == 3
