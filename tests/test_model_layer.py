"""read_dl_model, model parameters, 'summary' and apply_dl_model against plain onnxruntime."""

from __future__ import annotations

import re
import subprocess
import sys

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


def test_class_names_from_metadata(tmp_path, tiny_path):
    proto = onnx.load(tiny_path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "class_names", '["good", "scratch", "spot", "dent"]'
    path = tmp_path / "named.onnx"
    onnx.save(proto, path)
    model = dl.read_dl_model(path)
    assert dl.get_dl_model_param(model, "class_names") == ["good", "scratch", "spot", "dent"]


def test_set_class_names_changes_results(tiny, rng):
    dl.set_dl_model_param(tiny, "class_names", ["a", "b", "c", "d"])
    dl.set_dl_model_param(tiny, "class_ids", [10, 11, 12, 13])
    (result,) = dl.apply_dl_model(tiny, {"image": random_images(rng, 1, 32, 32, 3)[0]}, [])
    names = dict(zip([10, 11, 12, 13], "abcd", strict=True))
    assert [names[i] for i in result["classification_class_ids"]] == \
        result["classification_class_names"]


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
