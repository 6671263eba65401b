"""optimize_dl_model_for_inference: float32 copies, float16 casts, int8 QDQ quantisation, and
every heatmap method on the converted handles.

Truths: onnxruntime run directly on the converted graph (apply_dl_model's confidences), the
float32 model's heatmaps (float16 and int8 heatmaps must agree with them), a hand-written
straight-through estimator for the QuantizeLinear / DequantizeLinear converters, ONNX's own
checker (it refuses onnxruntime's float16 graph as written, so reading it needs the sort).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import dlheatmap as dl
from dlheatmap.graph import backward
from dlheatmap.results import heatmap_entries
from dlheatmap.runtime import torch_backend
from tests import models


@pytest.fixture(scope="module")
def evidence():
    model = dl.read_dl_model(models.trained_evidence_cnn())
    images, _, _ = models.evidence_images(24, seed=777)
    samples = [{"image": image} for image in images]
    (cpu,) = dl.query_available_dl_devices("runtime", "cpu")
    params = dl.get_dl_device_param(cpu, "optimize_for_inference_params")
    converted = {precision: dl.optimize_dl_model_for_inference(model, cpu, precision, samples,
                                                               params)
                 for precision in ("float32", "float16", "int8")}
    return model, samples, converted


def _probabilities(result: dict, classes: int) -> np.ndarray:
    out = np.empty(classes)
    out[result["classification_class_ids"]] = result["classification_confidences"]
    return out


@pytest.mark.parametrize("precision", ["float32", "float16", "int8"])
def test_apply_matches_onnxruntime_on_the_converted_graph(evidence, precision):
    model, samples, converted = evidence
    handle, report = converted[precision]
    assert dl.get_dl_model_param_s(handle, "precision") == precision
    assert dl.get_dl_model_param_s(model, "precision") == "float32"  # the original stays
    session = ort.InferenceSession(handle.info.model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    batch = np.stack([s["image"] for s in samples]).transpose(0, 3, 1, 2)
    (logits,) = session.run(None, {session.get_inputs()[0].name: batch})
    expected = torch.softmax(torch.from_numpy(logits.astype(np.float64)), dim=1).numpy()
    results = dl.apply_dl_model(handle, samples, [])
    ours = np.stack([_probabilities(r, 3) for r in results])
    np.testing.assert_allclose(ours, expected, atol=1e-6)

    original = np.stack([_probabilities(r, 3) for r in dl.apply_dl_model(model, samples, [])])
    difference = np.abs(ours - original)
    assert report["precision"] == precision
    assert report["num_calibration_samples"] == len(samples)
    assert report["max_abs_confidence_difference"] == pytest.approx(difference.max(), abs=1e-6)
    assert report["top1_agreement"] == pytest.approx(
        np.mean(ours.argmax(axis=1) == original.argmax(axis=1)))
    if precision == "float32":
        assert report["converted_initializers"] == 0 and difference.max() == 0
    else:
        assert report["converted_initializers"] > 0
        assert {"Conv", "Gemm"} <= set(report["converted_op_types"])


def _heatmaps(handle, samples, method):
    if method == "confidence_based":
        results = dl.apply_dl_model(handle, samples, [])
        dl.gen_dl_model_classification_heatmap(handle, samples, results,
                                               {"feature_size": 12, "sampling_size": 6})
    else:
        results = dl.gen_dl_model_heatmap(handle, samples, method, [], None)
    tops = [r["classification_class_ids"][0] for r in results]
    return tops, [heatmap_entries(r)[0].image.ravel() for r in results]


def _correlations(first, second) -> np.ndarray:
    """Pearson correlation of each pair of heatmaps. A constant map (no evidence anywhere) has
    no correlation: two constant maps agree (1), a constant and a varying one do not (0)."""
    def one(a, b) -> float:
        flat_a, flat_b = np.ptp(a) == 0, np.ptp(b) == 0
        if flat_a or flat_b:
            return float(flat_a and flat_b)
        return float(np.corrcoef(a, b)[0, 1])

    return np.array([one(a, b) for a, b in zip(first, second, strict=True)])


@pytest.mark.parametrize("method", ["grad_cam", "guided_grad_cam", "confidence_based"])
def test_float16_heatmaps_match_float32(evidence, method):
    model, samples, converted = evidence
    tops, reference = _heatmaps(model, samples, method)
    tops16, ours = _heatmaps(converted["float16"][0], samples, method)
    assert tops16 == tops
    assert _correlations(ours, reference).min() >= 0.99


@pytest.mark.parametrize("method", ["grad_cam", "guided_grad_cam", "confidence_based"])
def test_int8_heatmaps_follow_float32(evidence, method):
    model, samples, converted = evidence
    tops, reference = _heatmaps(model, samples, method)
    tops8, ours = _heatmaps(converted["int8"][0], samples, method)
    assert np.mean(np.array(tops8) == tops) >= 0.9
    assert np.median(_correlations(ours, reference)) >= 0.9


def test_onnxruntime_gradient_path_declines_converted_graphs(evidence):
    """No gradient rule covers Cast-to-float16 or QDQ nodes: the engine says so (None) and
    the torch path differentiates the tail (tests above)."""
    _, _, converted = evidence
    for precision in ("float16", "int8"):
        handle = converted[precision][0]
        layer = handle.default_target_layer()
        request = backward.GradientRequest(layer.output, head="grad_cam")
        assert backward.gradient_model(handle.info, request, handle.tensor_shapes(),
                                       (models.EVIDENCE_SIZE, models.EVIDENCE_SIZE)) is None


def test_float16_file_from_onnxruntime_reads_with_node_names_kept(tmp_path):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    original = onnx.load(models.trained_evidence_cnn())
    half = convert_float_to_float16(original, keep_io_types=True)
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(half)
    path = tmp_path / "half.onnx"
    onnx.save(half, path)
    model = dl.read_dl_model(path)
    assert {node.name for node in model.info.model.graph.node} == \
        {node.name for node in half.graph.node}
    assert dl.get_dl_model_param_s(model, "precision") == "float16"


# --- QuantizeLinear / DequantizeLinear in torch: fake quantisation, straight-through ---------

def _qdq_graph(scale: float, zero_point: int, dtype: int) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "scale"),
             helper.make_tensor("zero", dtype, [], [zero_point])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="quant"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"], name="dequant")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 50])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [2, 50])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("scale,zero_point,dtype,low,high", [
    (0.05, 128, TensorProto.UINT8, 0, 255),
    (0.02, 0, TensorProto.UINT8, 0, 255),
    (0.03, -5, TensorProto.INT8, -128, 127),
])
def test_qdq_converter_is_fake_quantisation_with_a_straight_through_gradient(
        scale, zero_point, dtype, low, high):
    model = _qdq_graph(scale, zero_point, dtype)
    x = np.random.default_rng(0).uniform(-10, 10, (2, 50)).astype(np.float32)
    (expected,) = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"]).run(None, {"x": x})
    module = torch_backend.convert(model, "test")
    tensor = torch.from_numpy(x).requires_grad_(True)
    y = module(tensor)
    np.testing.assert_allclose(y.detach().numpy(), expected, atol=1e-6)
    upstream = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 50)).astype(np.float32))
    (grad,) = torch.autograd.grad(y, tensor, upstream)
    # Straight-through reference: the upstream gradient where x / scale + zero_point lies in
    # the integer range, 0 where the quantisation clips.
    inside = (x / scale + zero_point >= low) & (x / scale + zero_point <= high)
    assert inside.any() and not inside.all()
    np.testing.assert_allclose(grad.numpy(), np.where(inside, upstream.numpy(), 0), rtol=1e-6)
