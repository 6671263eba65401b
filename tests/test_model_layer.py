"""read_dl_model, model parameters, 'summary' and apply_dl_model against plain onnxruntime."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import dlheatmap as dl
from tests import models
from tests.conftest import random_images


def ort_probabilities(path, images_nchw: np.ndarray, softmax: bool = True) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: images_nchw})
    out = out.reshape(len(out), -1).astype(np.float64)
    if not softmax:
        return out
    e = np.exp(out - out.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_read_infers_parameters(tiny):
    assert dl.get_dl_model_param_s(tiny, "type") == "classification"
    assert dl.get_dl_model_param(tiny, "image_dimensions") == [32, 32, 3]
    assert dl.get_dl_model_param(tiny, "class_ids") == [0, 1, 2, 3]
    assert dl.get_dl_model_param(tiny, "class_names") == ["0", "1", "2", "3"]
    assert dl.get_dl_model_param_s(tiny, "batch_size") == 1
    assert dl.get_dl_model_param_s(tiny, "runtime") == "cpu"
    assert dl.get_dl_model_param_s(tiny, "input_layout") == "NCHW"
    assert dl.get_dl_model_param_s(tiny, "precision") == "float32"


def test_apply_matches_onnxruntime(tiny, tiny_path, rng):
    images = random_images(rng, 5, 32, 32, 3)
    dl.set_dl_model_param(tiny, "batch_size", 2)  # 5 samples: batches of 2, 2, 1
    results = dl.apply_dl_model(tiny, [{"image": image} for image in images], [])
    expected = ort_probabilities(tiny_path, images.transpose(0, 3, 1, 2))
    for result, probs in zip(results, expected, strict=True):
        order = np.argsort(-probs, kind="stable")
        assert result["classification_class_ids"] == list(order)
        np.testing.assert_allclose(result["classification_confidences"], probs[order],
                                   rtol=1e-5, atol=1e-6)
        confidences = result["classification_confidences"]
        assert confidences == sorted(confidences, reverse=True)


def test_apply_takes_a_single_dict_and_output_subset(tiny, rng):
    image = random_images(rng, 1, 32, 32, 3)[0]
    (result,) = dl.apply_dl_model(tiny, {"image": image}, ["classification_class_ids"])
    assert list(result) == ["classification_class_ids"]


def test_softmax_output_confidences_are_the_models_own(rng):
    path = models.tiny_cnn(softmax=True)
    model = dl.read_dl_model(path)
    images = random_images(rng, 3, 32, 32, 3)
    results = dl.apply_dl_model(model, [{"image": i} for i in images], [])
    own = ort_probabilities(path, images.transpose(0, 3, 1, 2), softmax=False)
    for result, probs in zip(results, own, strict=True):
        np.testing.assert_allclose(sorted(result["classification_confidences"]),
                                   sorted(probs), rtol=1e-6)


def test_summary_lists_every_node(tiny, tiny_path):
    lines = dl.get_dl_model_param(tiny, "summary")
    graph = onnx.load(tiny_path).graph
    assert lines[0] == "ID; NAME; TYPE; OUTPUT SHAPE; NUM PARAMS; CONNECTED NODES"
    body = lines[1:]
    assert len(body) == len(graph.node)
    fields = [line.split("; ") for line in body]
    assert [f[1] for f in fields] == [node.name for node in graph.node]
    first_conv = next(f for f in fields if f[2] == "convolution")
    # 3 -> 16 channels, 3 x 3 kernel, with bias; output 32 x 32 x 16 (padding 1)
    assert first_conv[3] == "32x32x16"
    assert int(first_conv[4]) == 16 * 3 * 3 * 3 + 16
    for f in fields:
        assert re.fullmatch(r"(\d+x\d+x\d+|\?)", f[3])
        assert f[5] == "-" or all(int(i) > int(f[0]) for i in f[5].split(","))


def test_summary_param_counts_sum_to_model_size(tiny, tiny_path):
    graph = onnx.load(tiny_path).graph
    floats = {i.name: int(np.prod(i.dims)) for i in graph.initializer if i.data_type == 1}
    used = {name for node in graph.node for name in node.input if name in floats}
    total = sum(int(line.split("; ")[4]) for line in dl.get_dl_model_param(tiny, "summary")[1:])
    assert total == sum(floats[name] for name in used)


@pytest.mark.parametrize("failure", [
    "ImportError('No module named torchvision')",  # not installed
    "RuntimeError('operator torchvision::nms does not exist')",  # built for another torch
])
def test_works_without_a_usable_torchvision(tiny_path, failure):
    """dlheatmap imports and computes heatmaps when torchvision is missing or broken."""
    script = f"""
import sys
class Broken:
    def find_spec(self, name, path=None, target=None):
        if name == 'torchvision' or name.startswith('torchvision.'):
            raise {failure}
sys.meta_path.insert(0, Broken())
import numpy as np, dlheatmap as dl
m = dl.read_dl_model({str(tiny_path)!r})
sample = {{'image': np.ones((32, 32, 3), np.float32)}}
r = dl.gen_dl_model_heatmap_s(m, sample, 'guided_grad_cam', [], None)
assert 'torchvision' not in sys.modules
print('ok', sorted(r))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


def test_import_does_not_load_torch(tiny_path):
    """Reading a model and apply_dl_model need only onnx and onnxruntime."""
    script = f"""
import sys, numpy as np, dlheatmap as dl
m = dl.read_dl_model({str(tiny_path)!r})
dl.apply_dl_model(m, {{'image': np.ones((32, 32, 3), np.float32)}}, [])
print('torch' in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_runtime_gpu_falls_back_to_cpu(tiny_path, rng):
    """runtime 'gpu' without a usable GPU warns once per call and gives the CPU's results."""
    import warnings

    from dlheatmap.runtime.devices import GPUFallbackWarning, resolve_device

    samples = [{"image": image} for image in random_images(rng, 2, 32, 32, 3)]
    cpu = dl.read_dl_model(tiny_path)
    gpu = dl.read_dl_model(tiny_path)
    dl.set_dl_model_param(gpu, "runtime", "gpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        usable = resolve_device("gpu").kind == "gpu"
        on_gpu = dl.gen_dl_model_heatmap(gpu, samples, "grad_cam", [], None)
        applied = dl.apply_dl_model(gpu, samples, [])
    fallbacks = [w for w in caught if issubclass(w.category, GPUFallbackWarning)]
    assert bool(fallbacks) == (not usable)
    on_cpu = dl.gen_dl_model_heatmap(cpu, samples, "grad_cam", [], None)
    tolerance = 1e-4 if usable else 0.0
    for a, b, c in zip(on_gpu, on_cpu, applied, strict=True):
        assert a["classification_class_ids"] == b["classification_class_ids"]
        assert c["classification_class_ids"] == b["classification_class_ids"]
        (ha,), (hb,) = a["heatmap_grad_cam"].values(), b["heatmap_grad_cam"].values()
        np.testing.assert_allclose(ha, hb, atol=tolerance)


# --- real and integer parameter values --------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (Fraction(1, 3), 1 / 3), (Fraction(-254, 2), -127.0), (2, 2.0), (np.float32(0.25), 0.25),
    (np.int16(-5), -5.0), (np.longdouble(1.5), 1.5),
], ids=["fraction", "fraction-integral", "int", "float32", "int16", "longdouble"])
def test_real_parameters_take_any_real_number_as_a_float(tiny, value, expected):
    dl.set_dl_model_param(tiny, "image_range_min", value)
    (stored,) = dl.get_dl_model_param(tiny, "image_range_min")
    assert type(stored) is float and stored == expected


def _refusal(model, name, value) -> dl.HOperatorError:
    before = {param: dl.get_dl_model_param(model, param) for param in (
        "image_width", "image_range_min", "image_range_max", "batch_size", "gpu", "runtime")}
    with pytest.raises(dl.HOperatorError) as raised:
        dl.set_dl_model_param(model, name, value)
    assert name in str(raised.value)
    assert {param: dl.get_dl_model_param(model, param) for param in before} == before
    return raised.value


@pytest.mark.parametrize(("name", "value", "code"), [
    ("image_range_max", 10**400, 1303),  # beyond float's range
    ("image_range_min", Fraction(10**400, 3), 1303),
    ("image_range_min", -(10**5000), 1303),  # too long for Python to print
    ("image_range_max", np.longdouble("1e400"), 1303),
    ("image_range_min", Decimal("0.5"), 1203),  # a number, but not a numbers.Real
    ("image_range_min", 1 + 0j, 1203),
    ("gpu", 10**5000, 1303),
    ("gpu", 2**31, 1303),
    ("batch_size", 2**70, 1303),
    ("runtime", 10**5000, 1203),
], ids=["int-1e400", "fraction-1e400", "int-1e5000", "longdouble-1e400", "decimal", "complex",
        "gpu-1e5000", "gpu-2**31", "batch-2**70", "runtime-int-1e5000"])
def test_numbers_beyond_a_parameters_range_are_refused(tiny, name, value, code):
    assert _refusal(tiny, name, value).error_code == code


def test_size_beyond_its_maximum_is_refused_and_the_model_keeps_working():
    """image_width 2**70 used to be stored and crash ONNX shape inference later."""
    from tests import conformance_fixtures as cf

    model = dl.read_dl_model(cf.symbolic_size_path())
    for name, value in (("image_width", 2**70), ("image_height", 2**31),
                        ("image_dimensions", [8, 2**40, 3])):
        assert _refusal(model, name, value).error_code == 1303
    dl.set_dl_model_param(model, "image_dimensions", [8, 8, 3])
    assert dl.get_dl_model_param(model, "summary")[1].split("; ")[3] == "8x8x4"
    (result,) = dl.apply_dl_model(model, {"image": np.zeros((8, 8, 3), np.float32)}, [])
    assert len(result["classification_class_ids"]) == 3
    dl.set_dl_model_param(model, "image_width", 2**31 - 1)  # the maximum itself is allowed
    assert dl.get_dl_model_param(model, "image_width") == [2**31 - 1]


def test_image_range_min_must_stay_below_image_range_max(tiny):
    for name, value in (("image_range_min", 128.0), ("image_range_min", 500),
                        ("image_range_max", -127.0), ("image_range_max", Fraction(-300))):
        assert _refusal(tiny, name, value).error_code == 1303
    # the range moves past its old bounds when the far bound is set first
    dl.set_dl_model_param(tiny, "image_range_max", 300.0)
    dl.set_dl_model_param(tiny, "image_range_min", 200.0)
    params = dl.create_dl_preprocess_param_from_model(tiny, "none", "full_domain", [], [], [])
    assert (params["image_range_min"], params["image_range_max"]) == (200.0, 300.0)


# --- read_dl_model messages ----------------------------------------------------------------------

def test_reading_a_directory_says_it_is_one(tmp_path):
    with pytest.raises(dl.HOperatorError) as raised:
        dl.read_dl_model(tmp_path)
    assert raised.value.error_code == 7801
    assert f"{str(tmp_path)!r} is a directory" in str(raised.value)
    assert "no such file" not in str(raised.value)


# --- 'summary' on a branching graph, field by field against the ONNX file ---------------------

# HALCON layer kinds of the ops a torchvision ResNet exports to (BatchNorm is folded into the
# convolutions), written out here rather than taken from dlheatmap/graph/layers.py.
RESNET_KINDS = {"Conv": "convolution", "Relu": "activation", "MaxPool": "pooling",
                "Add": "elementwise", "GlobalAveragePool": "pooling", "Flatten": "reshape",
                "Gemm": "dense"}


def _node_output_shapes(path, graph: onnx.GraphProto) -> dict[str, tuple]:
    """Every node output's shape, as onnxruntime computes it for one 32 x 32 zero image."""
    proto = onnx.load(path)
    names = [node.output[0] for node in graph.node]
    known = {output.name for output in proto.graph.output}
    proto.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names
                              if name not in known)
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    values = session.run(names, {"image": np.zeros((1, 3, 32, 32), np.float32)})
    return {name: value.shape for name, value in zip(names, values, strict=True)}


def test_summary_of_a_branching_resnet_matches_its_onnx_graph():
    path = models.torchvision_model("resnet18", size=32, num_classes=4)
    graph = onnx.load(path).graph
    lines = dl.get_dl_model_param(dl.read_dl_model(path), "summary")[1:]
    fields = [line.split("; ") for line in lines]
    assert len(fields) == len(graph.node)
    floats = {init.name: int(np.prod(init.dims)) for init in graph.initializer
              if init.data_type == onnx.TensorProto.FLOAT}
    shapes = _node_output_shapes(path, graph)
    for index, (node, field) in enumerate(zip(graph.node, fields, strict=True)):
        readers = sorted(j for j, other in enumerate(graph.node)
                         if set(other.input) & set(node.output))
        _, c, *hw = shapes[node.output[0]]
        height, width = hw if hw else (1, 1)
        assert field == [str(index), node.name, RESNET_KINDS[node.op_type],
                         f"{width}x{height}x{c}",
                         str(sum(floats.get(name, 0) for name in node.input)),
                         ",".join(map(str, readers)) or "-"], field
    branching = [field for field in fields if "," in field[5]]
    assert len(branching) >= 8  # every residual block's input feeds two nodes
