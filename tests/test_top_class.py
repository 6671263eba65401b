"""One rule for the top class everywhere: the highest confidence, and among equal confidences
the first class in the model's output order. apply_dl_model, both heatmap operators, explain,
the CLI and the display must name the same class, ties included."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import dlheatmap as dl
from dlheatmap import cli
from dlheatmap.results import heatmap_entry

SIZE = 16
CLASSES = 5


def tied_model(path, logit_scale: float) -> str:
    """Conv -> ReLU -> global average pooling -> dense. The dense weights are scaled by
    ``logit_scale``: 0 makes every logit equal (an exact tie); 1e-12 leaves the logits different
    (so an ArgMax over them picks various classes) but their softmax ties exactly in float32."""
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    dense = (rng.standard_normal((CLASSES, 8)) * logit_scale).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
         helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
         helper.make_node("Gemm", ["f", "d"], ["logits"], transB=1, name="dense")],
        "tied",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", CLASSES])],
        [numpy_helper.from_array(conv, "w"), numpy_helper.from_array(dense, "d")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


def expected_top(path: str, images: np.ndarray) -> list[int]:
    """The rule computed independently: onnxruntime's logits, softmax in float64 rounded to
    float32, the first index of the maximum."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": images.transpose(0, 3, 1, 2).copy()})[0]
    shifted = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    probabilities = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    return [int(np.flatnonzero(row == row.max())[0]) for row in probabilities]


@pytest.fixture(params=[0.0, 1e-12], ids=["exact-tie", "tie-after-softmax"])
def tied(request, tmp_path):
    path = tied_model(tmp_path / "tied.onnx", request.param)
    images = np.random.default_rng(1).random((4, SIZE, SIZE, 3)).astype(np.float32)
    return path, images


def test_logits_really_differ_where_the_probabilities_tie(tmp_path):
    """The second model is a real test: an ArgMax over its logits disagrees with the rule."""
    path = tied_model(tmp_path / "t.onnx", 1e-12)
    images = np.random.default_rng(1).random((4, SIZE, SIZE, 3)).astype(np.float32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": images.transpose(0, 3, 1, 2).copy()})[0]
    assert (logits.argmax(axis=1) != 0).any()
    assert expected_top(path, images) == [0] * len(images)


def test_every_surface_names_the_same_top_class(tied, tmp_path):
    path, images = tied
    expected = expected_top(path, images)
    model = dl.read_dl_model(path)
    samples = [{"image": image} for image in images]
    applied = dl.apply_dl_model(model, samples, [])
    assert [r["classification_class_ids"][0] for r in applied] == expected
    for method in ("grad_cam", "guided_grad_cam"):
        results = dl.gen_dl_model_heatmap(model, samples, method, [], None)
        assert [r["classification_class_ids"][0] for r in results] == expected
        assert [heatmap_entry(r).class_id for r in results] == expected, method
    for method in ("grad_cam", "saliency", "guided_grad_cam", "eigen_cam"):
        assert dl.explain(model, images, method).class_ids[:, 0].tolist() == expected, method


def test_cli_and_display_follow_the_rule(tied, tmp_path):
    path, images = tied
    folder = tmp_path / "images"
    folder.mkdir()
    for index, image in enumerate(images):
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"{index}.png")
    out = tmp_path / "out"
    assert cli.main([path, str(folder), "-o", str(out), "--range-min", "0",
                     "--range-max", "1"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    decoded = np.stack([np.asarray(Image.open(folder / f"{i}.png"), np.float32) / 255
                        for i in range(len(images))])
    expected = dict(zip([f"{i}.png" for i in range(len(images))],
                        expected_top(path, decoded), strict=True))
    for row in rows:
        assert row["class_id"] == expected[row["image"].rsplit("/", 1)[-1]]
    model = dl.read_dl_model(path)
    result = dl.gen_dl_model_heatmap_s(model, {"image": images[0]}, "grad_cam", [], None)
    windows: dict = {}
    dl.display.dev_display_dl_data({"image": images[0]}, result, [], "heatmap_grad_cam", [],
                                   windows)
    picture = dl.display.dump_window_image(windows["heatmap_grad_cam"])
    assert picture.ndim == 3 and picture.size  # the heatmap's class is the result's top class
