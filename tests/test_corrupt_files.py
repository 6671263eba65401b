"""Corrupt model files are read or refused with 7801, never crash: run in a subprocess, so
that a crash or a hang fails the test.

Truths: a named mutation's outcome is written out from the spec; a truncated file's or a
random byte change's fate is compared with what onnx.checker and plain onnxruntime make of it.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import dlheatmap as dl
from tests import conformance_fixtures as cf
from tests.operator_calls import heatmap_of


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


def _write_corrupt_files(directory: Path, source: Path) -> dict[str, Path]:
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
    # onnxruntime refuses the kernel_shape when it runs, for every method: Guided Grad-CAM's
    # gradient model is an onnxruntime graph too (the torch engine would take the kernel from
    # the weight and never read the attribute)
    "kernel_shape_wrong": (7801, 7801, 7801),
    # Flatten(axis=0) of one image is [1, 4] again, so onnxruntime runs it, for every method
    # (onnx2torch's Flatten in the torch engine's whole-graph module would raise IndexError)
    "flatten_axis_0": (None, None, None),
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


def test_corrupt_files_are_read_or_refused_never_crash(tiny_path, tmp_path):
    """Named mutations give exactly their outcome above. Truncations and random byte changes
    are checked against oracles instead: 7801 at read exactly when onnx.checker refuses the
    file; once read, apply_dl_model gives plain onnxruntime's confidences, or 7801 where
    onnxruntime fails; a heatmap refusal is a result check (7801 graph, 1302 overflow)."""
    files = _write_corrupt_files(tmp_path, tiny_path)
    listing = tmp_path / "files.json"
    listing.write_text(json.dumps({name: str(path) for name, path in files.items()}))
    script = (f"from tests.test_corrupt_files import _exercise_main; "
              f"_exercise_main({str(listing)!r})")
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


