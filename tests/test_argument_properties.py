"""Property tests (hypothesis) of the HALCON operators' argument checks: any GenParam, any
TargetClasses value, any sample shape and type is either refused with its documented HALCON
code or gives a valid heatmap (spec/reliability.md, "Bad input").

Truths: the documented codes are the ``[[rules]]`` codes of spec/operators.toml; which
arguments are valid is decided by small oracles written from the spec's text (not by calling
dlheatmap); the top class comes from plain onnxruntime, layer names from the ONNX file.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dlheatmap as dl
from tests import conformance_fixtures as cf
from tests import models
from tests.operator_calls import HEATMAP, PROPERTY_SETTINGS, SPEC, documented, heatmap_of

GEN_PARAMS = SPEC.operators[HEATMAP].gen_params
SCALINGS = GEN_PARAMS["scaling"].values


@pytest.fixture(scope="module")
def shared(tiny_path) -> dl.Model:
    """One handle shared by the property tests (they never change its parameters)."""
    return dl.read_dl_model(tiny_path)


@pytest.fixture(scope="module")
def file_facts(tiny_path) -> dict:
    """Facts read from the ONNX file itself and a plain onnxruntime session."""
    graph = onnx.load(str(tiny_path)).graph
    return {
        "conv_names": [node.name for node in graph.node if node.op_type == "Conv"],
        "node_names": [node.name for node in graph.node],
        "session": ort.InferenceSession(str(tiny_path), providers=["CPUExecutionProvider"]),
    }


def top_class(session: ort.InferenceSession, image: np.ndarray) -> int:
    (scores,) = session.run(None, {"image": image.transpose(2, 0, 1)[None].astype(np.float32)})
    return int(np.argmax(scores[0]))


def expected_gen_param_code(gen_param: Any, method: str, conv_names: list[str]) -> int | None:
    """What the spec says about GenParam: None if valid, else the HALCON code.

    1205 for a GenParam that is no dict (None and empty sequences mean no GenParam); 7911 for
    a key that is unknown or not for this method; then 7914 for a value not allowed (a
    single value, a one-element list of one, booleans for use_conv_only; target_conv_layer ''
    or the name of a convolution in the file).
    """
    if gen_param is None or (isinstance(gen_param, (list, tuple)) and len(gen_param) == 0):
        return None
    if not isinstance(gen_param, dict):
        return 1205
    if any(key not in GEN_PARAMS or method not in GEN_PARAMS[key].methods for key in gen_param):
        return 7911  # keys are checked before values
    for key, value in gen_param.items():
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if key == "use_conv_only":
            valid = isinstance(value, bool) or value in ("true", "false")
        elif key == "scaling":
            valid = isinstance(value, str) and value in SCALINGS
        else:  # target_conv_layer: '' (the default) or a convolution of the file
            valid = isinstance(value, str) and (value == "" or value in conv_names)
        if not valid:
            return 7914
    return None


def _gen_param_strategy(node_names: list[str]):
    values = st.one_of(
        st.sampled_from(["true", "false", "TRUE", "maybe", "", *SCALINGS, *node_names]),
        st.booleans(), st.integers(-2, 5), st.none(), st.floats(allow_nan=True),
        st.lists(st.sampled_from(["true", "none", *node_names]), max_size=2),
    )
    keys = st.sampled_from([*GEN_PARAMS, "unknown_key", "Scaling", ""])
    return st.one_of(
        st.dictionaries(keys, values, max_size=3),
        st.none(), st.just([]), st.just(()), st.text(max_size=4), st.integers(),
        st.lists(st.text(max_size=3), min_size=1, max_size=2),
    )


NODE_NAMES = [node.name for node in onnx.load(str(models.tiny_cnn())).graph.node]


@PROPERTY_SETTINGS
@given(gen_param=_gen_param_strategy(NODE_NAMES),
       method=st.sampled_from(["grad_cam", "guided_grad_cam"]))
def test_gen_param_property(shared, file_facts, gen_param, method):
    image = cf.valid_image(3)
    before = copy.deepcopy(gen_param)
    expected = expected_gen_param_code(gen_param, method, file_facts["conv_names"])
    try:
        (result,) = dl.gen_dl_model_heatmap(shared, [{"image": image}], method, [], gen_param)
    except dl.HOperatorError as error:
        assert error.error_code in documented(HEATMAP)
        assert error.error_code == expected, str(error)
    else:
        assert expected is None
        scaling = (gen_param or {}).get("scaling", "scale_after_relu") if isinstance(
            gen_param, dict) else "scale_after_relu"
        scaling = scaling[0] if isinstance(scaling, list) else scaling
        _assert_valid_heatmap(result, method, image, scaling)
        assert heatmap_of(result, method)[0] == top_class(file_facts["session"], image)
    assert gen_param == before or _same_nan(gen_param, before)


def _same_nan(after: Any, before: Any) -> bool:
    """dicts holding NaN compare unequal to their copies; compare them by repr."""
    return repr(after) == repr(before)


def _assert_valid_heatmap(result: dict, method: str, image: np.ndarray, scaling: str) -> None:
    _, heatmap = heatmap_of(result, method)
    assert heatmap.dtype == np.float32
    assert np.isfinite(heatmap).all()
    if method == "guided_grad_cam":
        assert heatmap.shape == image.shape
        return
    assert heatmap.shape == image.shape[:2]
    assert heatmap.min() >= 0.0
    if scaling != "none":
        assert heatmap.max() <= 1.0 + 1e-6


def expected_target_code(target: Any, class_ids: list[int]) -> tuple[int | None, int | None]:
    """(code, class ID) the spec prescribes for TargetClasses; class None means top class.

    bytes and bytearray are single values that are not integers (1204), empty or not."""
    if isinstance(target, np.ndarray):
        target = target.tolist()
    if target is None or (isinstance(target, (list, tuple)) and len(target) == 0):
        return None, None
    values = list(target) if isinstance(target, (list, tuple)) else [target]
    if len(values) > 1:
        return 1404, None
    (value,) = values
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        return 1204, None
    if int(value) not in class_ids:
        return 7853, None
    return None, int(value)


_target_scalars = st.one_of(
    st.integers(-3, 8), st.integers(-2**70, 2**70), st.booleans(), st.floats(), st.text(max_size=3),
    st.none(), st.integers(0, 5).map(np.int64), st.integers(0, 3).map(np.uint8),
    st.integers(0, 3).map(float),
    # binary data: to Python a sequence of small integers (b'\x01' is [1]), never class IDs
    st.binary(max_size=2), st.binary(max_size=2).map(bytearray),
)
_targets = st.one_of(
    _target_scalars,
    st.lists(_target_scalars, max_size=3),
    st.lists(st.integers(-1, 4), max_size=3).map(tuple),
    st.lists(st.integers(-1, 4), max_size=3).map(lambda ids: np.array(ids, np.int64)),
    st.lists(st.lists(st.integers(0, 3), max_size=2), min_size=1, max_size=1),
)


@PROPERTY_SETTINGS
@given(target=_targets)
def test_target_classes_property(shared, file_facts, target):
    image = cf.valid_image(4)
    before = copy.deepcopy(target)
    expected, class_id = expected_target_code(target, [0, 1, 2, 3])
    try:
        (result,) = dl.gen_dl_model_heatmap(shared, {"image": image}, "grad_cam", target, None)
    except dl.HOperatorError as error:
        assert error.error_code in documented(HEATMAP)
        assert error.error_code == expected, str(error)
    else:
        assert expected is None
        _assert_valid_heatmap(result, "grad_cam", image, "scale_after_relu")
        wanted = class_id if class_id is not None else top_class(file_facts["session"], image)
        assert heatmap_of(result)[0] == wanted
    assert repr(target) == repr(before)


_shapes = st.one_of(
    st.just((32, 32, 3)),
    st.tuples(st.sampled_from([1, 31, 32, 33]), st.sampled_from([0, 31, 32]),
              st.sampled_from([1, 3, 4])),
    st.tuples(st.sampled_from([16, 32]), st.just(32)),
    st.sampled_from([(1, 32, 32, 3), (3, 32, 32), (3072,), ()]),
)
_dtypes = st.sampled_from([np.float32, np.float32, np.float64, np.float16, np.int32, np.uint8,
                           np.bool_, np.complex64])


@PROPERTY_SETTINGS
@given(shape=_shapes, dtype=_dtypes, poison=st.sampled_from([None, None, np.nan, np.inf, -np.inf]),
       container=st.sampled_from(["dict", "list", "tuple"]), copies=st.integers(1, 3),
       method=st.sampled_from(["grad_cam", "guided_grad_cam", "apply"]))
def test_sample_property(shared, shape, dtype, poison, container, copies, method):
    image = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    floating = np.issubdtype(image.dtype, np.floating)
    if poison is not None and floating and image.size:
        image.flat[0] = poison
    valid = floating and shape == (32, 32, 3) and np.isfinite(image).all()
    samples = _container({"image": image}, container, copies)
    before = image.copy()
    try:
        if method == "apply":
            results = dl.apply_dl_model(shared, samples, [])
        else:
            results = dl.gen_dl_model_heatmap(shared, samples, method, [], None)
    except dl.HOperatorError as error:
        operator = "apply_dl_model" if method == "apply" else HEATMAP
        assert error.error_code in documented(operator)
        assert error.error_code == 1302, str(error)
        assert not valid
    else:
        assert valid
        assert len(results) == (1 if container == "dict" else copies)
        for result in results:
            if method == "apply":
                assert sorted(result["classification_class_ids"]) == [0, 1, 2, 3]
                assert np.isfinite(result["classification_confidences"]).all()
            else:
                _assert_valid_heatmap(result, method, image, "scale_after_relu")
    np.testing.assert_array_equal(image, before)


def _container(sample: dict, kind: str, copies: int) -> Any:
    if kind == "dict":
        return sample
    items = [dict(sample) for _ in range(copies)]
    return items if kind == "list" else tuple(items)


