"""Reliability: bad input refused with HALCON codes, odd files, threads, leaks, immutability.

The guarantees tested here are written down in spec/reliability.md. Truths used:
- the documented codes are the ``[[rules]]`` codes of spec/operators.toml;
- which arguments are valid is decided by small oracles written from the spec's text (not by
  calling dlheatmap), the top class by plain onnxruntime, layer names from the ONNX file;
- concurrent results are compared with the same calls made serially, bit for bit;
- a corrupt file's fate is compared with what onnx.checker and plain onnxruntime make of it.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import subprocess
import sys
import threading
import tracemalloc
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import psutil
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import dlheatmap as dl
from dlheatmap.graph import normalise
from dlheatmap.spec import load_spec
from tests import conformance_fixtures as cf

SPEC = load_spec()
HEATMAP = "gen_dl_model_heatmap"
GEN_PARAMS = SPEC.operators[HEATMAP].gen_params
SCALINGS = GEN_PARAMS["scaling"].values
# 40 examples keep CI short; DLHEATMAP_HYPOTHESIS_EXAMPLES=1000 searches harder locally.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("DLHEATMAP_HYPOTHESIS_EXAMPLES", "40")), deadline=None,
    database=None, suppress_health_check=[HealthCheck.too_slow])


def documented(operator: str) -> set[int]:
    """The codes spec/operators.toml documents for ``operator``."""
    return {rule["code"] for rule in SPEC.rules if rule["operator"] == operator}


@pytest.fixture(scope="module")
def tiny_path() -> Path:
    return cf.tiny_path()


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


def heatmap_of(result: dict, method: str = "grad_cam") -> tuple[int, np.ndarray]:
    """(class ID, heatmap) of one gen_dl_model_heatmap result dict."""
    key = "heatmap_grad_cam" if method == "grad_cam" else "heatmap_guided_grad_cam"
    ((name, image),) = result[key].items()
    return int(name.rsplit("_", 1)[1]), image


# --- property tests ---------------------------------------------------------------------------

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


NODE_NAMES = [node.name for node in onnx.load(str(cf.tiny_path())).graph.node]


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


# --- odd graphs: read, then refused with their documented codes -------------------------------

ODD_MODELS = {
    # file builder -> the model type spec/decisions.md prescribes for it
    "segmentation": (cf.segmentation_path, "segmentation"),
    "two_inputs": (cf.two_inputs_path, "generic"),
    "two_outputs": (cf.two_outputs_path, "detection"),
    "detection": (cf.detection_path, "detection"),
    "yolo_like": (cf.yolo_like_path, "generic"),
    "integer_input": (cf.integer_input_path, "generic"),
}


@pytest.mark.parametrize("name", list(ODD_MODELS))
def test_odd_graphs_are_read_then_refused(name):
    build, model_type = ODD_MODELS[name]
    handle = dl.read_dl_model(build())
    assert dl.get_dl_model_param_s(handle, "type") == model_type
    for parameter in SPEC.parameters:  # every parameter can be read, 'summary' included
        assert isinstance(dl.get_dl_model_param(handle, parameter), list)
    sample = {"image": cf.valid_image(size=8)}
    with pytest.raises(dl.HOperatorError) as raised:
        dl.apply_dl_model(handle, sample, [])
    assert raised.value.error_code == 7912
    for method in ("grad_cam", "guided_grad_cam"):
        with pytest.raises(dl.HOperatorError) as raised:
            dl.gen_dl_model_heatmap(handle, sample, method, [], None)
        assert raised.value.error_code == 7851


# --- odd metadata: class names or the class IDs, never an exception -------------------------

_metadata_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 12) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.integers(-1, 12) | st.text("0123456789x ", max_size=3), inner, max_size=5),
    max_leaves=12)
_metadata_texts = st.one_of(
    st.text(max_size=30), _metadata_values.map(repr),
    _metadata_values.map(lambda value: json.dumps(value, default=str)),
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
)


@PROPERTY_SETTINGS
@example(text="{[1]: 2}")
@example(text="{0:'a','x':'b',2:'c',3:'d'}")
@example(text="[" * 100000 + "]" * 100000)
@given(text=_metadata_texts)
def test_any_metadata_gives_class_names_or_the_class_ids(tiny_proto, text):
    """Whatever text a file's metadata_props hold, reading the model does not fail and it has
    one string name per class; a list of four plain strings is taken as it is."""
    proto = copy.deepcopy(tiny_proto)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "class_names", text
    names = dl.get_dl_model_param(dl.Model(normalise(proto)), "class_names")
    assert len(names) == 4 and all(type(name) is str for name in names)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, list) and len(value) == 4 and all(type(v) is str for v in value):
        assert names == value


@pytest.fixture(scope="module")
def tiny_proto(tiny_path) -> onnx.ModelProto:
    return onnx.load(str(tiny_path))


# --- corrupt files: in a subprocess, so that a crash or a hang fails the test -----------------

def _set_attr(node: onnx.NodeProto, name: str, value: Any) -> None:
    for attribute in node.attribute:
        if attribute.name == name:
            node.attribute.remove(attribute)
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(init for init in model.graph.initializer if init.name == name)


def _input_dim(model: onnx.ModelProto, index: int) -> onnx.TensorShapeProto.Dimension:
    return model.graph.input[0].type.tensor_type.shape.dim[index]


def _external(model: onnx.ModelProto, location: str) -> None:
    weight = _initializer(model, "7.weight")
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", location


def _set_dims(dims, index: int, value: int) -> None:
    dims[index].Clear()
    dims[index].dim_value = value


# Structural mutations of the tiny CNN (nodes: 0 Conv, 1 Relu, 2 MaxPool, 3 Conv, 4 Relu,
# 5 Conv, 6 Relu, 7 GlobalAveragePool, 8 Flatten, 9 Gemm).
MUTATIONS = {
    "weight_dims": lambda m: _initializer(m, "7.weight").dims.__setitem__(1, 31),
    "weight_raw_truncated": lambda m: setattr(
        _initializer(m, "7.weight"), "raw_data", _initializer(m, "7.weight").raw_data[:100]),
    "bias_no_data": lambda m: setattr(_initializer(m, "7.bias"), "raw_data", b""),
    "weight_float16_label": lambda m: setattr(
        _initializer(m, "7.weight"), "data_type", onnx.TensorProto.FLOAT16),
    "weight_nan": lambda m: setattr(
        _initializer(m, "7.bias"), "raw_data", np.full(32, np.nan, np.float32).tobytes()),
    "weight_inf": lambda m: setattr(
        _initializer(m, "11.bias"), "raw_data", np.full(4, np.inf, np.float32).tobytes()),
    "pads_large": lambda m: _set_attr(m.graph.node[0], "pads", [64] * 4),
    "pads_negative": lambda m: _set_attr(m.graph.node[0], "pads", [-5] * 4),
    "strides_zero": lambda m: _set_attr(m.graph.node[0], "strides", [0, 0]),
    "strides_large": lambda m: _set_attr(m.graph.node[5], "strides", [64, 64]),
    "kernel_shape_wrong": lambda m: _set_attr(m.graph.node[0], "kernel_shape", [5, 5]),
    "group_two": lambda m: _set_attr(m.graph.node[3], "group", 2),
    "dilations_huge": lambda m: _set_attr(m.graph.node[5], "dilations", [100, 100]),
    "gemm_not_transposed": lambda m: _set_attr(m.graph.node[9], "transB", 0),
    "flatten_axis_0": lambda m: _set_attr(m.graph.node[8], "axis", 0),
    "relu_to_sigmoid": lambda m: setattr(m.graph.node[1], "op_type", "Sigmoid"),
    "unknown_op_type": lambda m: setattr(m.graph.node[1], "op_type", "Relu2"),
    "unknown_domain": lambda m: setattr(m.graph.node[1], "domain", "com.example"),
    "input_renamed": lambda m: m.graph.node[3].input.__setitem__(0, "nowhere"),
    "node_removed": lambda m: m.graph.node.remove(m.graph.node[4]),
    "cycle": lambda m: m.graph.node[0].input.__setitem__(0, "/2/Relu_output_0"),
    "duplicate_output": lambda m: m.graph.node[4].output.__setitem__(0, "/2/Relu_output_0"),
    "duplicate_initializer": lambda m: m.graph.initializer.append(
        copy.deepcopy(_initializer(m, "7.bias"))),
    "input_channels_5": lambda m: _set_dims(m.graph.input[0].type.tensor_type.shape.dim, 1, 5),
    "input_int64": lambda m: setattr(
        m.graph.input[0].type.tensor_type, "elem_type", onnx.TensorProto.INT64),
    "input_double": lambda m: setattr(
        m.graph.input[0].type.tensor_type, "elem_type", onnx.TensorProto.DOUBLE),
    "input_rank_3": lambda m: m.graph.input[0].type.tensor_type.shape.dim.pop(),
    "input_size_1": lambda m: [_set_dims(m.graph.input[0].type.tensor_type.shape.dim, k, 1)
                               for k in (2, 3)],
    "input_size_huge": lambda m: [
        _set_dims(m.graph.input[0].type.tensor_type.shape.dim, k, 100_000) for k in (2, 3)],
    "batch_fixed_2": lambda m: _set_dims(m.graph.input[0].type.tensor_type.shape.dim, 0, 2),
    "no_input": lambda m: m.graph.ClearField("input"),
    "no_output": lambda m: m.graph.ClearField("output"),
    "output_classes_7": lambda m: _set_dims(m.graph.output[0].type.tensor_type.shape.dim, 1, 7),
    "output_rank_3": lambda m: m.graph.output[0].type.tensor_type.shape.dim.add().__setattr__(
        "dim_value", 1),
    "output_renamed": lambda m: setattr(m.graph.output[0], "name", "nothing"),
    "opset_1": lambda m: m.opset_import[0].__setattr__("version", 1),
    "opset_99": lambda m: m.opset_import[0].__setattr__("version", 99),
    "ir_version_0": lambda m: setattr(m, "ir_version", 0),
    "ir_version_99": lambda m: setattr(m, "ir_version", 99),
    "external_data_missing": lambda m: _external(m, "missing.bin"),
    "external_data_escapes": lambda m: _external(m, "../../../../etc/passwd"),
}


def _write_corrupt_files(directory: Path) -> dict[str, Path]:
    source = cf.tiny_path()
    data = source.read_bytes()
    base = onnx.load(str(source))
    files = {}
    for name, mutate in MUTATIONS.items():
        model = copy.deepcopy(base)
        mutate(model)
        files[name] = directory / f"{name}.onnx"
        files[name].write_bytes(model.SerializeToString())
    for fraction in (0.001, 0.05, 0.3, 0.6, 0.9, 0.999):
        files[f"truncated_{fraction}"] = directory / f"truncated_{fraction}.onnx"
        files[f"truncated_{fraction}"].write_bytes(data[: int(len(data) * fraction)])
    rng = np.random.default_rng(2024)
    for index in range(24):  # bytes of the graph structure (head and tail), not of the weights
        corrupt = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            region = int(rng.integers(0, 1500)) if index % 2 else len(data) - 1 - int(
                rng.integers(0, 400))
            corrupt[region] = int(rng.integers(0, 256))
        files[f"bytes_{index}"] = directory / f"bytes_{index}.onnx"
        files[f"bytes_{index}"].write_bytes(bytes(corrupt))
    return files


def _capture(call) -> tuple[str, Any]:
    """('ok', value) or ('code', HALCON code) or ('other', 'Type: message')."""
    try:
        return "ok", call()
    except dl.HOperatorError as error:
        return "code", error.error_code
    except Exception as error:  # what the test must never see
        return "other", f"{type(error).__name__}: {error}"[:300]


def exercise(path: str) -> dict:
    """Everything an operator can do with the file at ``path``; runs in the subprocess."""
    image = cf.valid_image(7)
    outcome: dict[str, Any] = {}
    kind, handle = _capture(lambda: dl.read_dl_model(path))
    outcome["read"] = [kind, handle if kind != "ok" else None]
    if kind != "ok":
        return outcome
    calls = {
        "summary": lambda: len(dl.get_dl_model_param(handle, "summary")),
        "apply": lambda: dl.apply_dl_model(handle, {"image": image}, [])[0][
            "classification_confidences"],
        "grad_cam": lambda: _finite(dl.gen_dl_model_heatmap(handle, {"image": image}, "grad_cam",
                                                            [], None)[0]),
        "guided_grad_cam": lambda: _finite(dl.gen_dl_model_heatmap(
            handle, {"image": image}, "guided_grad_cam", [], None)[0], "guided_grad_cam"),
    }
    for name, call in calls.items():
        outcome[name] = list(_capture(call))
    return outcome


def _finite(result: dict, method: str = "grad_cam") -> bool:
    return bool(np.isfinite(heatmap_of(result, method)[1]).all())


def _exercise_main(listing: str) -> None:
    paths = json.loads(Path(listing).read_text())
    print(json.dumps({name: exercise(path) for name, path in paths.items()}))


def _plain_onnxruntime(path: Path) -> list[float] | None:
    """Sorted softmax confidences from plain onnxruntime for the test image, or None if
    onnxruntime cannot load or run the file, or gives a non-finite or mis-shaped result.
    A graph with a fixed batch size gets the image followed by zero images."""
    try:
        model = onnx.load(str(path))
        declared = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
        batch = max(1, model.graph.input[0].type.tensor_type.shape.dim[0].dim_value)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        image = np.zeros((batch, 3, 32, 32), np.float32)
        image[0] = cf.valid_image(7).transpose(2, 0, 1)
        (scores,) = session.run(None, {session.get_inputs()[0].name: image})
    except Exception:
        return None
    scores = np.asarray(scores, np.float64)[:1].reshape(1, -1)
    if scores.shape[1] != declared or not np.isfinite(scores).all():
        return None
    exp = np.exp(scores - scores.max())
    return sorted((exp / exp.sum())[0].tolist(), reverse=True)


def _checker_accepts(path: Path) -> bool:
    try:
        onnx.checker.check_model(onnx.load(str(path)))
    except Exception:
        return False
    return True


# The exact outcome of every structural mutation, from the spec: 7801 at read time where ONNX's
# checker or onnxruntime refuses the graph (spec/decisions.md, "Errors"); otherwise what
# apply_dl_model, Grad-CAM and Guided Grad-CAM give (None: a result; 'summary' always works).
REFUSED_AT_READ = frozenset({
    "weight_dims", "weight_raw_truncated", "bias_no_data", "weight_float16_label",
    "pads_negative", "strides_zero", "gemm_not_transposed", "unknown_op_type", "unknown_domain",
    "input_renamed", "node_removed", "cycle", "duplicate_output", "duplicate_initializer",
    "input_int64", "input_double", "input_rank_3", "no_input", "output_renamed", "opset_1",
    "opset_99", "ir_version_0", "ir_version_99", "external_data_missing",
    "external_data_escapes",
})
AFTER_READ: dict[str, tuple[int | None, int | None, int | None]] = {
    # (apply_dl_model, grad_cam, guided_grad_cam)
    "pads_large": (None, None, None),  # valid graphs, just unusual
    "strides_large": (None, None, None),
    "relu_to_sigmoid": (None, None, None),
    "batch_fixed_2": (None, None, None),  # the batch is padded with zero images
    "weight_nan": (7801, 7801, 7801),  # not finite even for an all-zero image
    "weight_inf": (7801, 7801, 7801),
    "output_classes_7": (7801, 7801, 7801),  # returns 4 scores, declares 7
    "group_two": (7801, 7801, 7801),  # onnxruntime loads the graph but cannot run it
    "dilations_huge": (7801, 7801, 7801),
    # onnxruntime refuses the kernel_shape when it runs; the torch graph that Guided Grad-CAM
    # runs takes the kernel from the weight and never reads the attribute
    "kernel_shape_wrong": (7801, 7801, None),
    # Flatten(axis=0) of one image is [1, 4] again, so onnxruntime (apply, Grad-CAM) runs it;
    # onnx2torch's Flatten in the whole-graph module of Guided Grad-CAM raises IndexError
    "flatten_axis_0": (None, None, 7801),
    "input_channels_5": (1302, 1302, 1302),  # the 3-channel image does not fit
    "input_size_huge": (1302, 1302, 1302),
    "input_size_1": (1302, 7912, 7912),  # no convolution larger than 1 x 1: before images
    "no_output": (7912, 7851, 7851),  # not a classifier
    "output_rank_3": (7912, 7851, 7851),
}
STEPS = ("apply", "grad_cam", "guided_grad_cam")


def test_every_mutation_has_its_exact_outcome():
    assert REFUSED_AT_READ | set(AFTER_READ) == set(MUTATIONS)
    assert not REFUSED_AT_READ & set(AFTER_READ)


def test_corrupt_files_are_read_or_refused_never_crash(tmp_path):
    """Named mutations give exactly their outcome above. Truncations and random byte changes
    are checked against oracles instead: 7801 at read exactly when onnx.checker refuses the
    file; once read, apply_dl_model gives plain onnxruntime's confidences, or 7801 where
    onnxruntime fails; a heatmap refusal is a result check (7801 graph, 1302 overflow)."""
    files = _write_corrupt_files(tmp_path)
    listing = tmp_path / "files.json"
    listing.write_text(json.dumps({name: str(path) for name, path in files.items()}))
    script = f"from tests.test_reliability import _exercise_main; _exercise_main({str(listing)!r})"
    command = [sys.executable, "-c", script]
    try:
        process = subprocess.run(command, capture_output=True, text=True, timeout=300,
                                 cwd=Path(__file__).parents[1])
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"reading or using a corrupt file hung: {timeout}")
    assert process.returncode == 0, f"crashed ({process.returncode}): {process.stderr[-3000:]}"
    outcomes = json.loads(process.stdout.strip().splitlines()[-1])
    for name, path in files.items():
        outcome = outcomes[name]
        for step, (kind, value) in outcome.items():
            assert kind != "other", f"{name}: {step} raised {value}"
            if step in ("grad_cam", "guided_grad_cam") and kind == "ok":
                assert value is True, f"{name}: {step} returned a non-finite heatmap"
        if name in MUTATIONS:
            _assert_exact_outcome(name, outcome)
        else:
            _assert_oracle_outcome(name, path, outcome)


def _code_or_none(step_outcome: list) -> int | None:
    kind, value = step_outcome
    return value if kind == "code" else None


def _assert_exact_outcome(name: str, outcome: dict) -> None:
    if name in REFUSED_AT_READ:
        assert outcome == {"read": ["code", 7801]}, f"{name}: {outcome}"
        return
    assert outcome["read"][0] == "ok" and outcome["summary"][0] == "ok", f"{name}: {outcome}"
    got = tuple(_code_or_none(outcome[step]) for step in STEPS)
    assert got == AFTER_READ[name], f"{name}: {dict(zip(STEPS, got, strict=True))}"


def _assert_oracle_outcome(name: str, path: Path, outcome: dict) -> None:
    if not _checker_accepts(path):
        assert outcome["read"] == ["code", 7801], name
        return
    if outcome["read"][0] != "ok":
        assert outcome["read"] == ["code", 7801], name  # onnxruntime cannot load it
        return
    assert outcome["summary"][0] == "ok", name
    reference = _plain_onnxruntime(path)
    kind, value = outcome["apply"]
    if reference is None:
        assert [kind, value] == ["code", 7801], f"{name}: onnxruntime fails, apply gave {value}"
    else:
        assert kind == "ok", f"{name}: onnxruntime runs it, apply_dl_model gave {value}"
        np.testing.assert_allclose(value, reference, rtol=1e-5, atol=1e-6)
    for step in ("grad_cam", "guided_grad_cam"):
        assert _code_or_none(outcome[step]) in (None, 7801, 1302), f"{name}: {step}"


# --- concurrency ------------------------------------------------------------------------------

THREADS = 8
CALLS_PER_THREAD = 200
VARIANTS = (
    ("grad_cam", [], None),
    ("grad_cam", [2], {"scaling": "none"}),
    ("grad_cam", [], {"use_conv_only": "false", "scaling": "scale_before_relu"}),
    ("grad_cam", [1], {"target_conv_layer": "/4/Conv"}),
    ("guided_grad_cam", [1], None),
    ("apply",),
)
WEIGHTS = (0.25, 0.15, 0.15, 0.1, 0.05, 0.3)  # guided Grad-CAM is ~20x slower than the rest


def _flatten(results: list[dict]) -> list[tuple[str, np.ndarray]]:
    """Every value of a result list as (key, array), in a fixed order."""
    items = []
    for index, result in enumerate(results):
        for key, value in sorted(result.items()):
            values = value.items() if isinstance(value, dict) else [("", value)]
            items += [(f"{index}.{key}.{sub}", np.asarray(item)) for sub, item in values]
    return items


def _call(handle: dl.Model, variant: tuple, samples: list[dict]) -> list[dict]:
    if variant[0] == "apply":
        return dl.apply_dl_model(handle, samples, [])
    method, target, gen_param = variant
    return dl.gen_dl_model_heatmap(handle, samples, method, target, gen_param)


def _pairs(count: int) -> list[list[dict]]:
    """Inputs of two samples each: a call covers a real batch."""
    rng = np.random.default_rng(11)
    images = [rng.standard_normal((32, 32, 3)).astype(np.float32) for _ in range(count)]
    return [[{"image": images[i]}, {"image": images[(i + 1) % count]}] for i in range(count)]


def _run_threads(worker, count: int = THREADS) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            worker(index)
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
        assert not thread.is_alive(), "a thread hung"
    return errors


def _assert_identical(got: list[dict], expected: list[tuple[str, np.ndarray]]) -> None:
    flat = _flatten(got)
    assert [key for key, _ in flat] == [key for key, _ in expected]
    for (key, value), (_, reference) in zip(flat, expected, strict=True):
        assert value.dtype == reference.dtype and value.shape == reference.shape, key
        assert np.array_equal(value, reference), key


def test_threads_on_one_handle_match_serial_calls_bit_for_bit():
    """8 threads x 200 calls (Grad-CAM variants, Guided Grad-CAM, apply) on one handle.

    Each call's result must be bit-identical to the same call made serially beforehand: a call
    shares sessions and torch modules with the others but no intermediate state, and the same
    kernels on the same batch give the same bits. Any difference would reveal state leaking
    between concurrent calls, so the comparison is exact, not approximate. The reference comes
    from a second handle on the same file; the threads start together on a fresh handle, so
    they also race to build its sessions and torch modules.
    """
    serial = cf.tiny_model()
    inputs = _pairs(8)
    reference = {(v, i): _flatten(_call(serial, VARIANTS[v], inputs[i]))
                 for v in range(len(VARIANTS)) for i in range(len(inputs))}
    handle = cf.tiny_model()
    start = threading.Barrier(THREADS)
    done = []

    def worker(index: int) -> None:
        rng = np.random.default_rng(index)
        start.wait()
        for _ in range(CALLS_PER_THREAD):
            v = int(rng.choice(len(VARIANTS), p=WEIGHTS))
            i = int(rng.integers(len(inputs)))
            _assert_identical(_call(handle, VARIANTS[v], inputs[i]), reference[(v, i)])
            done.append(1)

    errors = _run_threads(worker)
    assert not errors, errors[0]
    assert len(done) == THREADS * CALLS_PER_THREAD


def test_set_param_during_calls_never_mixes_two_parameter_states():
    """Heatmaps for class ID 2 run while another thread swaps the class IDs between
    [0, 1, 2, 3] and [3, 2, 1, 0] (ID 2 is output 2, then output 1), and the batch size and the
    grey-value range. Class names stay 'i0' .. 'i3', naming the outputs. Each call must use one
    parameter state throughout: its class IDs are all of one state, and its heatmap for ID 2
    is the serial heatmap of the output that ID 2 names in that same state (up to 1e-5: the
    batch size changes how samples are grouped, which may change the last bits). A call that
    chose the output under one state and labelled the result under the other would fail."""
    handle = cf.tiny_model()
    dl.set_dl_model_param(handle, "class_names", ["i0", "i1", "i2", "i3"])
    inputs = _pairs(4)
    states = ([0, 1, 2, 3], [3, 2, 1, 0])
    # serial heatmaps per input pair and output index, under the first state (ID = output)
    reference = {(i, output): _flatten(_call(handle, ("grad_cam", [output], None), inputs[i]))
                 for i in range(4) for output in (1, 2)}
    stop = threading.Event()
    seen_states = set()

    def setter() -> None:
        flip = 0
        while not stop.is_set():
            flip ^= 1
            dl.set_dl_model_param(handle, "class_ids", states[flip])
            dl.set_dl_model_param(handle, "batch_size", 1 + flip)
            dl.set_dl_model_param(handle, "image_range_min", -127.0 + flip)

    def worker(index: int) -> None:
        for call in range(60):
            pair = (index + call) % 4
            results = dl.gen_dl_model_heatmap(handle, inputs[pair], "grad_cam", [2], None)
            for position, result in enumerate(results):
                outputs = [int(name[1]) for name in result["classification_class_names"]]
                ids = result["classification_class_ids"]
                state = next(s for s, ids_of in enumerate(states)
                             if ids == [ids_of[output] for output in outputs])
                seen_states.add(state)
                class_id, heatmap = heatmap_of(result)
                assert class_id == 2
                output = states[state].index(2)
                expected = dict(reference[(pair, output)])
                np.testing.assert_allclose(
                    heatmap, expected[f"{position}.heatmap_grad_cam.heatmap_image_class_{output}"],
                    rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(
                    result["classification_confidences"],
                    expected[f"{position}.classification_confidences."], rtol=1e-5, atol=1e-6)

    changer = threading.Thread(target=setter)
    changer.start()
    try:
        errors = _run_threads(worker)
    finally:
        stop.set()
        changer.join()
    assert not errors, errors[0]
    assert seen_states == {0, 1}  # both states were really in use


def _assert_close(flat: list, reference: list) -> None:
    assert [key for key, _ in flat] == [key for key, _ in reference]
    for (key, value), (_, expected) in zip(flat, reference, strict=True):
        if value.dtype.kind == "f":
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            assert np.array_equal(value, expected), key


def test_size_change_during_calls_gives_old_or_new_size_never_a_mix():
    """On a model with symbolic width and height, a call validated at one size is run at that
    size even if another thread sets image_dimensions meanwhile: each call either succeeds
    with the result of a serial call at the sample's size, or refuses the sample (1302)."""
    handle = dl.read_dl_model(cf.symbolic_size_path())
    sizes = (8, 12)
    images = {size: cf.valid_image(1, size=size) for size in sizes}
    reference = {}
    for size in sizes:
        dl.set_dl_model_param(handle, "image_dimensions", [size, size, 3])
        reference[size] = _flatten(dl.gen_dl_model_heatmap(handle, {"image": images[size]},
                                                           "grad_cam", [], None))
    stop = threading.Event()
    outcomes = {"ok": 0, "1302": 0}

    def setter() -> None:
        while not stop.is_set():
            for size in sizes:
                dl.set_dl_model_param(handle, "image_dimensions", [size, size, 3])

    def worker(index: int) -> None:
        size = sizes[index % 2]
        for _ in range(40):
            try:
                results = dl.gen_dl_model_heatmap(handle, {"image": images[size]}, "grad_cam",
                                                  [], None)
            except dl.HOperatorError as error:
                assert error.error_code == 1302, str(error)
                outcomes["1302"] += 1
                continue
            _assert_close(_flatten(results), reference[size])
            outcomes["ok"] += 1

    changer = threading.Thread(target=setter)
    changer.start()
    try:
        errors = _run_threads(worker)
    finally:
        stop.set()
        changer.join()
    assert not errors, errors[0]
    assert outcomes["ok"] + outcomes["1302"] == THREADS * 40
    assert outcomes["ok"] > 0


def test_clear_during_calls_finishes_or_refuses_with_2450():
    """clear_dl_model while 8 threads use the handle: a running call either completes with the
    serial result or raises 2450; afterwards every call raises 2450 and the caches are empty."""
    handle = cf.tiny_model()
    inputs = _pairs(4)
    variants = (VARIANTS[0], VARIANTS[5])
    reference = {(v, i): _flatten(_call(handle, variants[v], inputs[i]))
                 for v in range(2) for i in range(4)}
    completed, refused = [], []
    enough = threading.Event()

    def worker(index: int) -> None:
        for call in range(400):
            v, i = call % 2, (index + call) % 4
            try:
                results = _call(handle, variants[v], inputs[i])
            except dl.HOperatorError as error:
                assert error.error_code == 2450, str(error)
                refused.append(call)
                return
            _assert_identical(results, reference[(v, i)])
            completed.append(1)
            if len(completed) >= 200:
                enough.set()

    errors: list[BaseException] = []
    runner = threading.Thread(target=lambda: errors.extend(_run_threads(worker)))
    runner.start()
    assert enough.wait(timeout=120), "the threads made no progress"
    dl.clear_dl_model(handle)  # while the threads are busy
    runner.join()
    assert not errors, errors[0]
    assert len(refused) == THREADS  # every thread ran into the cleared handle
    assert len(handle._cache) == 0
    with pytest.raises(dl.HOperatorError) as raised:
        dl.gen_dl_model_heatmap(handle, inputs[0], "grad_cam", [], None)
    assert raised.value.error_code == 2450


# --- leaks ------------------------------------------------------------------------------------

def _hook_counts(handle: dl.Model) -> tuple[int, ...]:
    """Hooks on the cached torch modules and torch's global module hooks."""
    from torch.nn.modules import module as torch_module

    local = 0
    for entry in list(handle._cache.values()):
        root = getattr(entry, "module", entry)
        if isinstance(root, torch.nn.Module):
            for sub in root.modules():
                local += (len(sub._forward_hooks) + len(sub._forward_pre_hooks)
                          + len(sub._backward_hooks) + len(sub._backward_pre_hooks))
    global_hooks = tuple(len(getattr(torch_module, name)) for name in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
        "_global_backward_pre_hooks"))
    return (local, *global_hooks)


def _sessions() -> int:
    # type() rather than isinstance(): the latter touches __class__ of every object, which
    # makes some deprecated torch objects warn.
    return sum(type(obj) is ort.InferenceSession for obj in gc.get_objects())


def _heatmap_calls(handle: dl.Model, inputs: list[list[dict]], count: int, start: int) -> None:
    """One-sample calls: Grad-CAM with three option sets, Guided Grad-CAM every 25th call."""
    for call in range(start, start + count):
        variant = VARIANTS[4] if call % 25 == 0 else VARIANTS[call % 3]
        _call(handle, variant, inputs[call % len(inputs)][:1])


_CHILD = "DLHEATMAP_MEMORY_TEST_CHILD"


@pytest.mark.slow
def test_memory_is_flat_from_200_to_2000_heatmap_calls():
    """Measured in a fresh process: earlier tests' allocations would blur the baseline."""
    if os.environ.get(_CHILD) != "1":
        test = f"{__file__}::test_memory_is_flat_from_200_to_2000_heatmap_calls"
        done = subprocess.run(
            [sys.executable, "-m", "pytest", test, "-q", "-s", "-p", "no:cacheprovider"],
            env={**os.environ, _CHILD: "1"}, capture_output=True, text=True, timeout=900,
            cwd=Path(__file__).parents[1])
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert "1 passed" in done.stdout
        return
    handle = cf.tiny_model()
    inputs = _pairs(4)
    process = psutil.Process()
    _heatmap_calls(handle, inputs, 100, 0)  # warm-up: sessions, torch modules, allocator pools
    gc.collect()
    _heatmap_calls(handle, inputs, 200, 100)
    gc.collect()
    rss_200 = process.memory_info().rss
    keys_200, hooks_200, sessions_200 = list(handle._cache), _hook_counts(handle), _sessions()
    _heatmap_calls(handle, inputs, 1800, 300)
    gc.collect()
    rss_2000 = process.memory_info().rss
    print(f"RSS after 200 calls {rss_200 / 2**20:.1f} MiB, after 2000 {rss_2000 / 2**20:.1f} "
          f"MiB ({rss_2000 / rss_200 - 1:+.2%})")
    assert rss_2000 <= rss_200 * 1.05
    assert rss_2000 - rss_200 < 32 * 2**20  # under 18 KiB per call, whatever the baseline
    assert set(handle._cache) == set(keys_200)  # nothing new was cached or rebuilt
    assert _hook_counts(handle) == hooks_200
    assert _sessions() == sessions_200


def test_python_allocations_do_not_grow_per_call():
    """tracemalloc sees numpy buffers too: a kept 32 x 32 heatmap per call would add 4 KiB,
    1.2 MiB over 300 calls; the bound allows under 900 bytes per call."""
    handle = cf.tiny_model()
    inputs = _pairs(4)
    _heatmap_calls(handle, inputs, 60, 0)
    gc.collect()
    tracemalloc.start()
    try:
        _heatmap_calls(handle, inputs, 40, 60)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        _heatmap_calls(handle, inputs, 300, 100)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    print(f"tracemalloc: {after - before} bytes more after 300 calls")
    assert after - before < 256 * 1024, f"{after - before} bytes kept by 300 calls"


def test_handles_are_freed_and_caches_stay_bounded():
    """No global registry keeps handles alive; a handle's cache never exceeds its bound even
    when every layer, method and option is used."""
    refs = []
    for _ in range(5):
        handle = cf.tiny_model()
        dl.gen_dl_model_heatmap(handle, _pairs(1)[0], "grad_cam", [], None)
        refs.append(weakref.ref(handle))
        if len(refs) % 2:
            dl.clear_dl_model(handle)
        del handle
    gc.collect()
    assert all(ref() is None for ref in refs)

    handle = cf.tiny_model()
    sizes = []
    for layer in ("/0/Conv", "/4/Conv", "/7/Conv"):
        for options in ({"use_conv_only": "true"}, {"use_conv_only": "false"}):
            _call(handle, ("grad_cam", [], {"target_conv_layer": layer, **options}), _pairs(1)[0])
            sizes.append(len(handle._cache))
        _call(handle, ("guided_grad_cam", [], {"target_conv_layer": layer}), _pairs(1)[0])
        sizes.append(len(handle._cache))
    _call(handle, VARIANTS[5], _pairs(1)[0])
    sizes.append(len(handle._cache))
    from dlheatmap.model import _CACHE_SIZE

    assert max(sizes) <= _CACHE_SIZE
    assert sizes[-1] >= 10  # the cache was really exercised


# --- inputs are never modified ------------------------------------------------------------------

def test_inputs_are_never_modified():
    handle = cf.tiny_model()
    base = cf.valid_image(9)
    images = [
        base,
        base.astype(np.float64),
        np.asfortranarray(base),
        base[::1, ::1, :],
        np.broadcast_to(base[:1, :1], base.shape),  # read-only view
    ]
    readonly = base.copy()
    readonly.flags.writeable = False
    images.append(readonly)
    samples = [{"image": image, "extra": [1, 2]} for image in images]
    gen_param = {"target_conv_layer": ["/4/Conv"], "use_conv_only": True, "scaling": "none"}
    target, outputs = [1], ["classification_class_ids"]
    snapshot = copy.deepcopy((samples, gen_param, target, outputs))
    flags = [(image.flags.writeable, image.flags.c_contiguous) for image in images]

    results = dl.gen_dl_model_heatmap(handle, samples, "grad_cam", target, gen_param)
    results += dl.gen_dl_model_heatmap(handle, samples, "guided_grad_cam", target,
                                       {"target_conv_layer": "/4/Conv"})
    dl.apply_dl_model(handle, samples, outputs)

    after = (samples, gen_param, target, outputs)
    for one, two in zip(samples, snapshot[0], strict=True):
        assert list(one) == list(two)  # no result keys were added to the samples
        np.testing.assert_array_equal(one["image"], two["image"])
        assert one["image"].dtype == two["image"].dtype and one["extra"] == two["extra"]
    assert after[1:] == snapshot[1:]
    assert [(i.flags.writeable, i.flags.c_contiguous) for i in images] == flags
    for result in results:  # results own their memory
        for value in result.values():
            arrays = value.values() if isinstance(value, dict) else []
            for array in arrays:
                assert not any(np.shares_memory(array, image) for image in images)


def test_parameters_do_not_alias_callers_lists():
    handle = cf.tiny_model()
    names = ["cat", "dog", "bird", "fish"]
    dl.set_dl_model_param(handle, "class_names", names)
    names[0] = "changed"
    got = dl.get_dl_model_param(handle, "class_names")
    assert got == ["cat", "dog", "bird", "fish"]
    got[1] = "changed too"
    assert dl.get_dl_model_param(handle, "class_names") == ["cat", "dog", "bird", "fish"]

    first = dl.gen_dl_model_heatmap(handle, _pairs(1)[0], "grad_cam", [], None)
    _, heatmap = heatmap_of(first[0])
    heatmap[...] = 99.0  # callers may write into their results
    second = dl.gen_dl_model_heatmap(handle, _pairs(1)[0], "grad_cam", [], None)
    assert heatmap_of(second[0])[1].max() <= 1.0
