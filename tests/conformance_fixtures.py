"""Valid default calls and the '@fixtures' named by the ``[[rules]]`` rows of spec/operators.toml.

A rule's ``call`` overrides arguments of the valid default call of its operator. A string
value starting with '@' names a fixture here: ``FIXTURES[name](args)`` returns the value, and
may also replace other arguments of the call in ``args`` (a target layer name only makes
sense together with the model that has that layer).

Besides the torch-exported models of ``tests/models.py``, the odd graphs (two inputs, two
outputs, segmentation- and detection-like outputs, integer input, no convolution, a 1 x 1
convolution, an op onnx2torch cannot convert, a graph onnxruntime refuses) are written here
with ``onnx.helper``: a few nodes each, built in milliseconds, cached beside the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import dlheatmap as dl
from dlheatmap.spec import load_spec
from tests import graphs, models
from tests.graphs import tensor

Args = dict[str, Any]

OPSET = 17
SIZE = 32  # the tiny CNN's input: 3 x 32 x 32, 4 classes, dynamic batch
CLASSES = 4


# --- models ----------------------------------------------------------------------------------

def tiny_path() -> Path:
    return models.tiny_cnn()


def tiny_model() -> dl.Model:
    """A fresh handle on the tiny CNN."""
    return dl.read_dl_model(tiny_path())


def valid_image(seed: int = 0, size: int = SIZE, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((size, size, channels)).astype(np.float32)


def valid_sample(seed: int = 0) -> dict:
    return {"image": valid_image(seed)}


def _weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.3).astype(np.float32)


def _conv(name: str, x: str, out: str, weight: np.ndarray, pads: int,
          inits: list) -> onnx.NodeProto:
    inits.append(numpy_helper.from_array(weight, f"{name}.w"))
    inits.append(numpy_helper.from_array(np.zeros(weight.shape[0], np.float32), f"{name}.b"))
    return helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], name=name,
                            pads=[pads] * 4)


def _save(name: str, graph: onnx.GraphProto) -> Path:
    """Write ``graph`` as an ONNX file in the test-model cache (keyed by its content)."""
    model = graphs.model_of(graph, OPSET)
    model.producer_name = "dlheatmap-tests"
    onnx.checker.check_model(model)  # every helper graph is valid ONNX; the odd part is elsewhere
    data = model.SerializeToString()
    path = models.CACHE / f"helper-{name}-{hashlib.sha1(data).hexdigest()[:12]}.onnx"
    if not path.exists():
        models.CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_bytes(data)
        partial.replace(path)
    return path


def _trunk(x: str, inits: list, nodes: list, channels: int = 3, features: int = 4) -> str:
    """Conv 3x3 + Relu on ``x``; returns the activation's name."""
    rng = np.random.default_rng(7)
    nodes.append(_conv("conv1", x, "c1", _weights(rng, features, channels, 3, 3), 1, inits))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"], name="relu1"))
    return "r1"


def _head(x: str, inits: list, nodes: list, out: str, features: int = 4, classes: int = 3):
    """Global average pooling, Flatten, Gemm: [N, features, h, w] -> [N, classes]."""
    rng = np.random.default_rng(8)
    inits.append(numpy_helper.from_array(_weights(rng, classes, features), f"{out}.fc.w"))
    inits.append(numpy_helper.from_array(np.zeros(classes, np.float32), f"{out}.fc.b"))
    nodes += [
        helper.make_node("GlobalAveragePool", [x], [f"{out}.gap"], name=f"{out}_gap"),
        helper.make_node("Flatten", [f"{out}.gap"], [f"{out}.flat"], name=f"{out}_flatten"),
        helper.make_node("Gemm", [f"{out}.flat", f"{out}.fc.w", f"{out}.fc.b"], [out],
                         name=f"{out}_fc", transB=1),
    ]


def helper_classifier(height: int | str = 8, width: int | str = 8) -> Path:
    """A valid classifier written with onnx.helper: [N, 3, height, width] -> [N, 3].

    Global average pooling makes it run at any size, so ``height`` and ``width`` may be
    symbolic (strings).
    """
    inits, nodes = [], []
    _head(_trunk("image", inits, nodes), inits, nodes, "scores")
    graph = helper.make_graph(nodes, "classifier", [tensor("image", ["N", 3, height, width])],
                              [tensor("scores", ["N", 3])], inits)
    return _save(f"classifier-{height}-{width}", graph)


def symbolic_size_path() -> Path:
    """[N, 3, H, W] input: batch, width and height settable, channels fixed."""
    return helper_classifier("H", "W")


def segmentation_path() -> Path:
    """One image input, one [N, 2, 8, 8] output: model type 'segmentation'."""
    inits, nodes = [], []
    rng = np.random.default_rng(3)
    nodes.append(_conv("seg", "image", "mask", _weights(rng, 2, 3, 3, 3), 1, inits))
    graph = helper.make_graph(nodes, "segmentation", [tensor("image", ["N", 3, 8, 8])],
                              [tensor("mask", ["N", 2, 8, 8])], inits)
    return _save("segmentation", graph)


def two_inputs_path() -> Path:
    """Two image inputs added together, one [N, 3] output: model type 'generic'."""
    inits, nodes = [], []
    nodes.append(helper.make_node("Add", ["image_a", "image_b"], ["sum"], name="add"))
    _head(_trunk("sum", inits, nodes), inits, nodes, "scores")
    inputs = [tensor("image_a", ["N", 3, 8, 8]), tensor("image_b", ["N", 3, 8, 8])]
    graph = helper.make_graph(nodes, "two_inputs", inputs, [tensor("scores", ["N", 3])], inits)
    return _save("two_inputs", graph)


def two_outputs_path() -> Path:
    """One image input, two [N, 3] heads: model type 'detection' (several outputs)."""
    inits, nodes = [], []
    trunk = _trunk("image", inits, nodes)
    _head(trunk, inits, nodes, "scores_a")
    _head(trunk, inits, nodes, "scores_b")
    graph = helper.make_graph(nodes, "two_outputs", [tensor("image", ["N", 3, 8, 8])],
                              [tensor("scores_a", ["N", 3]), tensor("scores_b", ["N", 3])],
                              inits)
    return _save("two_outputs", graph)


def detection_path() -> Path:
    """Boxes [N, 64, 4] and scores [N, 64, 3], one per cell of the 8 x 8 feature map."""
    inits, nodes = [], []
    trunk = _trunk("image", inits, nodes)
    rng = np.random.default_rng(5)
    nodes.append(_conv("box_conv", trunk, "box_map", _weights(rng, 4, 4, 1, 1), 0, inits))
    nodes.append(_conv("cls_conv", trunk, "cls_map", _weights(rng, 3, 4, 1, 1), 0, inits))
    for map_name, out, depth in (("box_map", "boxes", 4), ("cls_map", "scores", 3)):
        shape = f"{out}.shape"
        inits.append(numpy_helper.from_array(np.array([0, depth, 64], np.int64), shape))
        nodes += [
            helper.make_node("Reshape", [map_name, shape], [f"{out}.flat"], name=f"{out}_reshape"),
            helper.make_node("Transpose", [f"{out}.flat"], [out], name=f"{out}_transpose",
                             perm=[0, 2, 1]),
        ]
    graph = helper.make_graph(nodes, "detection", [tensor("image", ["N", 3, 8, 8])],
                              [tensor("boxes", ["N", 64, 4]), tensor("scores", ["N", 64, 3])],
                              inits)
    return _save("detection", graph)


def yolo_like_path() -> Path:
    """One image input, one [N, 64, 7] output (boxes and scores in one tensor): 'generic'."""
    inits, nodes = [], []
    trunk = _trunk("image", inits, nodes)
    rng = np.random.default_rng(6)
    nodes.append(_conv("pred_conv", trunk, "pred_map", _weights(rng, 7, 4, 1, 1), 0, inits))
    inits.append(numpy_helper.from_array(np.array([0, 7, 64], np.int64), "pred.shape"))
    nodes += [
        helper.make_node("Reshape", ["pred_map", "pred.shape"], ["pred.flat"], name="reshape"),
        helper.make_node("Transpose", ["pred.flat"], ["pred"], name="transpose", perm=[0, 2, 1]),
    ]
    graph = helper.make_graph(nodes, "yolo_like", [tensor("image", ["N", 3, 8, 8])],
                              [tensor("pred", ["N", 64, 7])], inits)
    return _save("yolo_like", graph)


def integer_input_path() -> Path:
    """A classifier whose input is int64 (token-like data, not an image): 'generic'."""
    inits, nodes = [], []
    nodes.append(helper.make_node("Cast", ["ids"], ["image"], name="cast", to=TensorProto.FLOAT))
    _head(_trunk("image", inits, nodes), inits, nodes, "scores")
    graph = helper.make_graph(nodes, "integer_input",
                              [tensor("ids", ["N", 3, 8, 8], TensorProto.INT64)],
                              [tensor("scores", ["N", 3])], inits)
    return _save("integer_input", graph)


def no_conv_path() -> Path:
    """A classifier without any convolution (Flatten + Gemm): no layer for Grad-CAM."""
    rng = np.random.default_rng(9)
    inits = [numpy_helper.from_array(_weights(rng, 3, 192), "fc.w"),
             numpy_helper.from_array(np.zeros(3, np.float32), "fc.b")]
    nodes = [helper.make_node("Flatten", ["image"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["scores"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "no_conv", [tensor("image", ["N", 3, 8, 8])],
                              [tensor("scores", ["N", 3])], inits)
    return _save("no_conv", graph)


CONV_1X1 = "conv_full"


def conv_1x1_path() -> Path:
    """Conv 3x3 (8 x 8 output) then a Conv with an 8 x 8 kernel (1 x 1 output) named
    ``conv_full``, Flatten: [N, 3] scores."""
    inits, nodes = [], []
    trunk = _trunk("image", inits, nodes)
    rng = np.random.default_rng(4)
    nodes.append(_conv(CONV_1X1, trunk, "full", _weights(rng, 3, 4, 8, 8), 0, inits))
    nodes.append(helper.make_node("Flatten", ["full"], ["scores"], name="flatten"))
    graph = helper.make_graph(nodes, "conv_1x1", [tensor("image", ["N", 3, 8, 8])],
                              [tensor("scores", ["N", 3])], inits)
    return _save("conv_1x1", graph)


def unconvertible_path() -> Path:
    """A classifier with a ``Hardmax`` node after the convolution: onnxruntime runs it,
    onnx2torch has no converter for it, so no gradient can pass through it."""
    inits, nodes = [], []
    trunk = _trunk("image", inits, nodes)
    nodes.append(helper.make_node("Hardmax", [trunk], ["hard"], name="hardmax", axis=1))
    _head("hard", inits, nodes, "scores")
    graph = helper.make_graph(nodes, "unconvertible", [tensor("image", ["N", 3, 8, 8])],
                              [tensor("scores", ["N", 3])], inits)
    return _save("unconvertible", graph)


def unrunnable_path() -> Path:
    """Passes onnx.checker (no shape inference) but its Conv weight has 5 input channels for a
    3-channel image: onnxruntime refuses the graph."""
    inits, nodes = [], []
    rng = np.random.default_rng(2)
    nodes.append(_conv("conv1", "image", "c1", _weights(rng, 4, 5, 3, 3), 1, inits))
    _head("c1", inits, nodes, "scores")
    graph = helper.make_graph(nodes, "unrunnable", [tensor("image", ["N", 3, 8, 8])],
                              [tensor("scores", ["N", 3])], inits)
    return _save("unrunnable", graph)


def nan_weights_path() -> Path:
    """The helper classifier with a NaN in its last layer's bias: every output is NaN, also
    for an all-zero image (what check_outputs reports as broken weights, 7801)."""
    inits, nodes = [], []
    _head(_trunk("image", inits, nodes), inits, nodes, "scores")
    (index,) = [i for i, init in enumerate(inits) if init.name == "scores.fc.b"]
    inits[index] = numpy_helper.from_array(np.array([0.0, np.nan, 0.0], np.float32),
                                           "scores.fc.b")
    graph = helper.make_graph(nodes, "nan_weights", [tensor("image", ["N", 3, 8, 8])],
                              [tensor("scores", ["N", 3])], inits)
    return _save("nan_weights", graph)


def declares_seven_classes_path() -> Path:
    """The helper classifier, whose Gemm returns 3 scores, with its output declared as [N, 7]:
    onnx.checker does not infer shapes and onnxruntime runs it, returning 3 scores."""
    inits, nodes = [], []
    _head(_trunk("image", inits, nodes), inits, nodes, "scores")
    graph = helper.make_graph(nodes, "declares_seven", [tensor("image", ["N", 3, 8, 8])],
                              [tensor("scores", ["N", 7])], inits)
    return _save("declares_seven", graph)


# --- valid default calls, per operator (HALCON parameter name -> value) ----------------------

def default_call(operator: str) -> Args:
    """Arguments of a valid call of ``operator`` on a fresh tiny-CNN handle.

    The single-value variants (``..._s``) take the arguments of their operator.
    """
    operator = operator.removesuffix("_s")
    if operator == "read_dl_model":
        return {"FileName": str(tiny_path())}
    (cpu,) = dl.query_available_dl_devices("runtime", "cpu")
    handleless: dict[str, Args] = {
        "query_available_dl_devices": {"GenParamName": ["runtime"], "GenParamValue": ["cpu"]},
        "get_dl_device_param": {"DLDevice": cpu, "GenParamName": "name"},
    }
    if operator in handleless:
        return handleless[operator]
    handle = tiny_model()
    calls: dict[str, Args] = {
        "clear_dl_model": {},
        "get_dl_model_param": {"GenParamName": "class_ids"},
        "set_dl_model_param": {"GenParamName": "runtime", "GenParamValue": "cpu"},
        "apply_dl_model": {"DLSampleBatch": [valid_sample()], "Outputs": []},
        "gen_dl_model_heatmap": {"DLSample": [valid_sample()], "HeatmapMethod": "grad_cam",
                                 "TargetClasses": [], "GenParam": None},
        "gen_dl_model_classification_heatmap": {
            "DLSample": [valid_sample()],
            "DLResult": dl.apply_dl_model(handle, [valid_sample()], []),
            "GenParam": {"feature_size": 16, "sampling_size": 8}},
        "optimize_dl_model_for_inference": {
            "DLDevice": cpu, "Precision": "float32", "DLSamples": [valid_sample()],
            "GenParam": {}},
    }
    return {"DLModelHandle": handle, **calls[operator]}


def invoke(operator: str, args: Args) -> Any:
    """Call ``dlheatmap.<operator>`` with ``args`` in HALCON's parameter order."""
    names = load_spec().operators[operator.removesuffix("_s")].parameters
    return getattr(dl, operator)(*(args[name] for name in names))


# --- fixtures --------------------------------------------------------------------------------

def _sample_batch(image: Any) -> list[dict]:
    return [{"image": image}]


def _cleared(args: Args) -> dl.Model:
    handle = tiny_model()
    dl.clear_dl_model(handle)
    return handle


def _relabelled(args: Args) -> dl.Model:
    """The tiny CNN with class IDs 10 .. 13 instead of 0 .. 3."""
    handle = tiny_model()
    dl.set_dl_model_param(handle, "class_ids", [10, 11, 12, 13])
    return handle


def _file(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def _truncated(tmp: Path) -> str:
    data = tiny_path().read_bytes()
    return _file(tmp, "truncated.onnx", data[: len(data) // 2])


def _layer_of(path: Callable[[], Path], layer: str | Callable[[dl.Model], str]):
    """Fixture: switch the call to the model at ``path`` and return one of its layer names."""
    def fixture(args: Args) -> str:
        handle = dl.read_dl_model(path())
        args["DLModelHandle"] = handle
        if "DLSample" in args:
            size = handle.params.image_height
            args["DLSample"] = [{"image": valid_image(size=size)}]
        return layer(handle) if callable(layer) else layer
    return fixture


def _first_layer(op_type: str) -> Callable[[dl.Model], str]:
    return lambda handle: next(
        layer.name for layer in handle.info.layers if layer.op_type == op_type)


def _with_model(path: Callable[[], Path]) -> Callable[[Args], dl.Model]:
    """Fixture for DLModelHandle: that model, with samples of its input size."""
    def fixture(args: Args) -> dl.Model:
        handle = dl.read_dl_model(path())
        key = "DLSample" if "DLSample" in args else "DLSampleBatch"
        if key in args:
            args[key] = [{"image": valid_image(size=8)}]
        return handle
    return fixture


class Fixtures:
    """Resolves '@name' strings; files are written under ``tmp`` (a pytest tmp_path)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        image = valid_image()
        self.table: dict[str, Callable[[Args], Any]] = {
            "none": lambda args: None,
            "not_a_handle": lambda args: "handle",
            "dict_handle": lambda args: {"type": "classification"},
            "cleared_handle": _cleared,
            "missing_file": lambda args: str(tmp / "does_not_exist.onnx"),
            "directory": lambda args: str(tmp),
            "empty_file": lambda args: _file(tmp, "empty.onnx", b""),
            "text_file": lambda args: _file(tmp, "text.onnx", b"this is not a model\n" * 20),
            "random_bytes_file": lambda args: _file(
                tmp, "random.onnx", np.random.default_rng(0).bytes(4096)),
            "truncated_file": lambda args: _truncated(tmp),
            "no_nodes_file": lambda args: _file(tmp, "no_nodes.onnx", _no_nodes_model()),
            "checker_failing_file": lambda args: _file(tmp, "unknown_op.onnx", _unknown_op()),
            "path_pair": lambda args: [str(tiny_path()), str(tiny_path())],
            "duplicate_class_ids": lambda args: [0, 1, 2, 2],
            "sample_image_list": lambda args: _sample_batch(image.tolist()),
            "sample_image_none": lambda args: _sample_batch(None),
            "sample_image_uint8": lambda args: _sample_batch(
                np.zeros((SIZE, SIZE, 3), np.uint8)),
            "sample_image_bool": lambda args: _sample_batch(np.zeros((SIZE, SIZE, 3), bool)),
            "sample_image_complex": lambda args: _sample_batch(image.astype(np.complex64)),
            "sample_image_object": lambda args: _sample_batch(image.astype(object)),
            "sample_image_wrong_size": lambda args: _sample_batch(valid_image(size=SIZE + 1)),
            "sample_image_transposed": lambda args: _sample_batch(
                np.ascontiguousarray(image.transpose(2, 0, 1))),
            "sample_image_wrong_channels": lambda args: _sample_batch(valid_image(channels=1)),
            "sample_image_2d": lambda args: _sample_batch(image[..., 0].copy()),
            "sample_image_4d": lambda args: _sample_batch(image[None]),
            "sample_image_1d": lambda args: _sample_batch(image.ravel()),
            "sample_image_empty": lambda args: _sample_batch(np.zeros((0, SIZE, 3), np.float32)),
            "sample_image_nan": lambda args: _sample_batch(_poisoned(image, np.nan)),
            "sample_image_inf": lambda args: _sample_batch(_poisoned(image, np.inf)),
            "sample_image_neg_inf": lambda args: _sample_batch(_poisoned(image, -np.inf)),
            "sample_image_float64_huge": lambda args: _sample_batch(image.astype(np.float64)
                                                                    * 1e300),
            "two_samples": lambda args: [valid_sample(0), valid_sample(1)],
            "two_results": lambda args: [dict(args["DLResult"][0]), dict(args["DLResult"][0])],
            "second_sample_bad": lambda args: [valid_sample(), {"image": valid_image(size=8)}],
            "second_sample_not_dict": lambda args: [valid_sample(), "image"],
            "sample_generator": lambda args: (s for s in [valid_sample()]),
            "sample_array": lambda args: valid_image(),
            "symbolic_size_model": _with_model(symbolic_size_path),
            "relabelled_model": _relabelled,
            "genparam_int_key": lambda args: {1: "x"},
            "segmentation_model": _with_model(segmentation_path),
            "two_inputs_model": _with_model(two_inputs_path),
            "two_outputs_model": _with_model(two_outputs_path),
            "detection_model": _with_model(detection_path),
            "yolo_like_model": _with_model(yolo_like_path),
            "integer_input_model": _with_model(integer_input_path),
            "no_conv_model": _with_model(no_conv_path),
            "unconvertible_model": _with_model(unconvertible_path),
            "unrunnable_model": _with_model(unrunnable_path),
            "non_conv_layer": _layer_of(tiny_path, _first_layer("Relu")),
            "conv_1x1_layer": _layer_of(conv_1x1_path, CONV_1X1),
            "class_id_array_pair": lambda args: np.array([0, 1]),
            "class_id_bytes": lambda args: b"\x01",
            "class_id_bytearray": lambda args: bytearray(b"\x01"),
            "huge_integer": lambda args: 10**400,
            "decimal_value": lambda args: Decimal("0.5"),
            "nan_weights_model": _with_model(nan_weights_path),
            "declares_seven_classes_model": _with_model(declares_seven_classes_path),
            # finite float32 pixels that no convolution can sum without overflowing
            "sample_image_overflowing": lambda args: _sample_batch(
                np.full((SIZE, SIZE, 3), 1e38, np.float32)),
        }

    def names(self) -> set[str]:
        return set(self.table)

    def resolve(self, value: Any, args: Args) -> Any:
        """``value`` with every '@name' (also inside lists and dicts) replaced."""
        if isinstance(value, str) and value.startswith("@"):
            return self.table[value[1:]](args)
        if isinstance(value, list):
            return [self.resolve(item, args) for item in value]
        if isinstance(value, dict):
            return {key: self.resolve(item, args) for key, item in value.items()}
        return value

    def call(self, rule: dict) -> Args:
        """The arguments of ``rule``'s bad call: the valid default with the rule's overrides."""
        args = default_call(rule["operator"])
        for name, value in rule.get("call", {}).items():
            args[name] = self.resolve(value, args)
        return args


def fixture_names(value: Any) -> set[str]:
    """Every '@name' used inside a rule's ``call`` value."""
    if isinstance(value, str):
        return {value[1:]} if value.startswith("@") else set()
    if isinstance(value, list):
        return set().union(*(fixture_names(item) for item in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(fixture_names(item) for item in value.values())) if value else set()
    return set()


def _poisoned(image: np.ndarray, value: float) -> np.ndarray:
    image = image.copy()
    image[3, 5, 1] = value
    return image


def _no_nodes_model() -> bytes:
    graph = helper.make_graph([], "empty", [tensor("image", ["N", 3, 8, 8])],
                              [tensor("image", ["N", 3, 8, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]) \
        .SerializeToString()


def _unknown_op() -> bytes:
    node = helper.make_node("NoSuchOperator", ["image"], ["scores"], name="mystery")
    graph = helper.make_graph([node], "unknown_op", [tensor("image", ["N", 3, 8, 8])],
                              [tensor("scores", ["N", 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]) \
        .SerializeToString()
