"""The ``dlheatmap`` command end to end.

Truth: a model whose Grad-CAM heatmap is known in closed form (``models.identity_cam_cnn``:
the heatmap is the preprocessed image divided by its maximum, the class-0 probability is
``sigmoid(2 * mean)``), so the pictures, statistics and confidences written by the command can
be predicted with plain numpy from the image file alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlheatmap import cli
from dlheatmap.results import heatmap_entry
from tests import graphs, models

SIZE = 16


@pytest.fixture(scope="module")
def model_path():
    return models.identity_cam_cnn(SIZE)


def blob_image(height=48, width=64, rows=(9, 18), cols=(40, 56), value=255, background=20):
    image = np.full((height, width), background, np.uint8)
    image[rows[0]:rows[1], cols[0]:cols[1]] = value
    return image


def expected_heatmap(image: np.ndarray) -> np.ndarray:
    """Preprocessing (range 0..1, area shrink by whole factors) and the closed-form heatmap."""
    fy, fx = image.shape[0] // SIZE, image.shape[1] // SIZE
    small = image.astype(np.float64).reshape(SIZE, fy, SIZE, fx).mean(axis=(1, 3)) / 255.0
    return small / small.max(), small, (fy, fx)


def read_results(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_cli(*args):
    return cli.main([str(a) for a in args])


def test_main_job_in_a_subprocess(tmp_path, model_path):
    """The command as installed users run it: exit status, message, picture and results."""
    images = tmp_path / "images"
    images.mkdir()
    image = blob_image()
    Image.fromarray(image).save(images / "blob.png")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "dlheatmap.cli", str(model_path), str(images), "-o", str(out),
         "--range-min", "0", "--range-max", "1", "--class-names", "bright,dark"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout and "1 of 1" in done.stdout

    (record,) = read_results(out / "results.jsonl")
    heat, small, (fy, fx) = expected_heatmap(image)
    assert record["class_id"] == 0 and record["class_name"] == "bright"
    assert record["confidence"] == pytest.approx(1 / (1 + np.exp(-2 * small.mean())), rel=1e-5)
    stats = record["heatmap"]
    assert stats["max"] == pytest.approx(1.0)
    assert stats["mean"] == pytest.approx(heat.mean(), rel=1e-5)
    assert stats["area_above_half"] == pytest.approx((heat >= 0.5).mean())
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    centroid_x = ((cols * heat).sum() / heat.sum() + 0.5) * fx - 0.5
    centroid_y = ((rows * heat).sum() / heat.sum() + 0.5) * fy - 0.5
    assert stats["centroid"]["x"] == pytest.approx(centroid_x, abs=0.01)
    assert stats["centroid"]["y"] == pytest.approx(centroid_y, abs=0.01)
    assert 40 <= stats["peak"]["x"] < 56 and 9 <= stats["peak"]["y"] < 18  # inside the blob

    with Image.open(record["overlay"]) as pil:
        picture = np.asarray(pil.convert("RGB")).astype(int)
    factor = 5  # 64 x 48 enlarged to 320 wide for the legend
    assert picture.shape[1] == 64 * factor and picture.shape[0] > 48 * factor
    inside = picture[13 * factor, 48 * factor]  # blob centre: jet's red end
    outside = picture[40 * factor, 10 * factor]  # background: jet's blue end
    assert inside[0] > inside[2] + 60
    assert outside[2] > outside[0] + 30


@pytest.mark.parametrize("low, high", [(200, 300), (-300, -200), (0, 1)])
def test_grey_range_anywhere_relative_to_the_default(tmp_path, model_path, low, high):
    """Each range is reached whatever the default (-127 .. 128) it starts from; the heatmap is
    the preprocessed image itself (identity CAM), byte values mapped onto low .. high."""
    images = tmp_path / "images"
    images.mkdir()
    image = blob_image()
    Image.fromarray(image).save(images / "blob.png")
    out = tmp_path / "out"
    assert run_cli(model_path, images, "-o", out, "--range-min", low, "--range-max", high,
                   "-q") == 0
    (record,) = read_results(out / "results.jsonl")
    _, small, _ = expected_heatmap(image)
    mapped = np.maximum(low + small * (high - low), 0)  # the CAM's ReLU
    expected = (mapped / mapped.max()).mean() if mapped.max() > 0 else 0.0  # all zero stays
    assert record["heatmap"]["mean"] == pytest.approx(expected, rel=1e-4)


def test_folder_with_a_broken_file_exits_1_and_keeps_the_rest(tmp_path, model_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(blob_image()).save(images / "a.png")
    Image.fromarray(np.stack([blob_image()] * 3, axis=2)).save(images / "b.jpg")
    (images / "c.png").write_bytes(b"this is not a PNG")
    out = tmp_path / "out"
    status = run_cli(model_path, images, "-o", out, "--range-min", "0", "--range-max", "1",
                     "--batch-size", "2")
    assert status == cli.EXIT_SOME_FAILED
    records = {r["image"].rsplit("/", 1)[-1]: r for r in read_results(out / "results.jsonl")}
    assert set(records) == {"a.png", "b.jpg", "c.png"}
    assert records["c.png"]["error_code"] == 5234 and "overlay" not in records["c.png"]
    for name in ("a.png", "b.jpg"):
        assert (out / records[name]["overlay"].rsplit("/", 1)[-1]).is_file()
    assert "c.png" in capsys.readouterr().err


def test_guided_method_and_options(tmp_path, model_path):
    image_file = tmp_path / "blob.tif"
    Image.fromarray(blob_image()).save(image_file)
    out = tmp_path / "out"
    status = run_cli(model_path, image_file, "-o", out, "--method", "guided_grad_cam",
                     "--target-class", "0", "--no-legend", "--range-min", "0", "--range-max",
                     "1", "--results", tmp_path / "r.jsonl", "-q")
    assert status == cli.EXIT_OK
    (record,) = read_results(tmp_path / "r.jsonl")
    assert record["method"] == "guided_grad_cam" and record["class_id"] == 0
    with Image.open(record["overlay"]) as pil:
        assert pil.size == (320, 240)  # no legend band


def test_same_stem_gets_distinct_names(tmp_path, model_path):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        Image.fromarray(blob_image()).save(tmp_path / folder / "same.png")
    out = tmp_path / "out"
    assert run_cli(model_path, tmp_path / "x", tmp_path / "y", "-o", out, "-q") == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["same_grad_cam-2.png",
                                                         "same_grad_cam.png"]


def test_progress_bar_when_asked(tmp_path, model_path, capsys):
    Image.fromarray(blob_image()).save(tmp_path / "a.png")
    assert run_cli(model_path, tmp_path / "a.png", "-o", tmp_path / "out", "--progress") == 0
    assert "100%" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--target-class", "9"], "7853"),
    (["--target-conv-layer", "no_such_layer"], "7914"),
    (["--gen-param", "colour=red"], "7911"),
    (["--method", "guided_grad_cam", "--scaling", "none"], "7911"),
    (["--method", "layer_cam", "--scaling", "none"], "7911"),  # HALCON's grad_cam only
    (["--method", "score_cam", "--use-conv-only", "true"], "7911"),
    (["--method", "saliency", "--target-conv-layer", "conv"], "1305"),  # takes no layer
    (["--method", "grad_cam", "--target-conv-layer", "relu"], "7914"),  # HALCON: Conv only
    (["--normalization", "constant_values"], "constant_values"),
    (["--gen-param", "novalue"], "KEY=VALUE"),
    (["--class-names", "only_one"], "class-names"),
])
def test_refused_options_exit_2_with_one_line(tmp_path, model_path, capsys, extra, message):
    Image.fromarray(blob_image()).save(tmp_path / "a.png")
    status = run_cli(model_path, tmp_path / "a.png", "-o", tmp_path / "out", *extra)
    err = capsys.readouterr().err
    assert status == cli.EXIT_BAD_INPUT
    assert err.startswith("dlheatmap: error:") and message in err
    assert "Traceback" not in err


def test_bad_inputs_exit_2(tmp_path, model_path, capsys):
    Image.fromarray(blob_image()).save(tmp_path / "a.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.onnx").write_text("not a model")
    cases = [
        ([tmp_path / "missing.onnx", tmp_path / "a.png"], "model file not found"),
        ([tmp_path / "text.onnx", tmp_path / "a.png"], "7801"),
        ([model_path, tmp_path / "empty"], "no image files"),
        ([model_path, tmp_path / "nope.png"], "no such file"),
    ]
    for args, message in cases:
        assert run_cli(*args, "-o", tmp_path / "out") == cli.EXIT_BAD_INPUT
        assert message in capsys.readouterr().err


def test_results_file_in_a_new_folder_is_created_like_the_output_folder(tmp_path, model_path):
    Image.fromarray(blob_image()).save(tmp_path / "a.png")
    results = tmp_path / "new" / "deeper" / "r.jsonl"
    assert run_cli(model_path, tmp_path / "a.png", "-o", tmp_path / "out", "--results",
                   results, "-q") == cli.EXIT_OK
    (record,) = read_results(results)
    assert Path(record["overlay"]).parent == tmp_path / "out"


@pytest.mark.parametrize("output,results,message", [
    ("out", "a_folder", "is a folder"),  # --results names an existing folder
    ("out", "a_file/r.jsonl", "cannot create results folder"),  # its folder is a file
    ("a_file", None, "cannot create output folder"),  # --output is a file
    ("a_file/sub", None, "cannot create output folder"),
])
def test_bad_output_paths_exit_2_before_any_work(tmp_path, model_path, capsys, output, results,
                                                  message):
    Image.fromarray(blob_image()).save(tmp_path / "a.png")
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("in the way")
    extra = [] if results is None else ["--results", tmp_path / results]
    status = run_cli(model_path, tmp_path / "a.png", "-o", tmp_path / output, *extra)
    err = capsys.readouterr().err
    assert status == cli.EXIT_BAD_INPUT
    assert err.startswith("dlheatmap: error:") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.rglob("*_grad_cam.png"))  # no image was processed


def test_interrupt_exits_130_and_keeps_the_results_so_far(tmp_path, model_path):
    """SIGINT in the middle of a long run: one line on stderr, exit status 130, and the
    results file holds whole JSON lines for the images done before it."""
    import signal
    import time

    images = tmp_path / "images"
    images.mkdir()
    count = 200  # about 20 ms each: seconds of work after the first line appears
    for index in range(count):
        Image.fromarray(blob_image()).save(images / f"{index:03d}.png")
    results = tmp_path / "out" / "results.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "dlheatmap.cli", str(model_path), str(images), "-o",
         str(tmp_path / "out"), "--batch-size", "1", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (results.is_file() and results.read_text()) and process.poll() is None:
            assert time.monotonic() < deadline, "no result line within 60 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == cli.EXIT_INTERRUPTED, err
    assert err.strip().splitlines()[-1] == "dlheatmap: interrupted" and "Traceback" not in err
    records = read_results(results)  # whole lines only: each one parses
    assert 1 <= len(records) < count
    assert all(Path(record["overlay"]).is_file() for record in records)


@pytest.mark.parametrize("method", ["saliency", "eigen_cam", "grad_cam_plus_plus"])
def test_target_class_for_a_batch_of_images_with_an_explain_method(tmp_path, model_path,
                                                                    method):
    """--target-class names one class for every image of a batch, for explain()'s methods as
    for HALCON's; each record explains that class with its own probability."""
    images = tmp_path / "images"
    images.mkdir()
    blobs = [blob_image(), blob_image(rows=(30, 45), value=200), blob_image(background=90)]
    for index, image in enumerate(blobs):
        Image.fromarray(image).save(images / f"{index}.png")
    out = tmp_path / "out"
    status = run_cli(model_path, images, "-o", out, "--method", method, "--target-class", "1",
                     "--class-names", "bright,dark", "--range-min", "0", "--range-max", "1",
                     "-q")
    assert status == cli.EXIT_OK
    records = read_results(out / "results.jsonl")
    assert len(records) == len(blobs)
    for record, image in zip(records, blobs, strict=True):
        _, small, _ = expected_heatmap(image)
        assert record["class_id"] == 1 and record["class_name"] == "dark"
        # class 0 has probability sigmoid(2 * mean) (see the module docstring)
        assert record["confidence"] == pytest.approx(1 / (1 + np.exp(2 * small.mean())),
                                                     rel=1e-5)
        assert record["top_classes"][0]["class_id"] == 0  # the top class is not the one asked


def test_explain_runner_takes_halcons_target_classes(model_path):
    """The runners take gen_dl_model_heatmap's TargetClasses: none, an ID, or a one-element
    list, meaning that class for every sample; more than one is 1404, as for HALCON."""
    import dlheatmap as dl

    model = dl.read_dl_model(model_path)
    samples = [{"image": np.full((SIZE, SIZE), value, np.float32)} for value in (0.2, 0.7)]
    run = cli.METHODS["saliency"].run
    for targets, expected in (([1], 1), (1, 1), ((0,), 0), ([], 0), (None, 0)):
        results = run(model, samples, targets, {})
        assert [heatmap_entry(result).class_id for result in results] == [expected] * 2
    with pytest.raises(dl.HOperatorError) as info:
        run(model, samples, [0, 1], {})
    assert info.value.error_code == 1404


def test_non_classifier_is_refused(tmp_path, capsys):
    from onnx import helper

    # One rank-4 output with a spatial size: dlheatmap reads it as a segmentation model.
    model = graphs.model(
        [helper.make_node("Conv", ["image", "w"], ["scores"], name="conv")],
        [graphs.tensor("image", [1, 1, SIZE, SIZE])], [graphs.tensor("scores", [1, 2, SIZE, SIZE])],
        graphs.initializers({"w": np.ones((2, 1, 1, 1))}), name="segmentation")
    graphs.save(model, tmp_path / "seg.onnx")
    Image.fromarray(blob_image()).save(tmp_path / "a.png")
    status = run_cli(tmp_path / "seg.onnx", tmp_path / "a.png", "-o", tmp_path / "o")
    assert status == cli.EXIT_BAD_INPUT
    assert "classification" in capsys.readouterr().err


def test_usage_errors_are_argparse_exit_2(capsys):
    for argv in (["model.onnx"], ["m.onnx", "a.png", "--batch-size", "0"],
                 ["m.onnx", "a.png", "--method", "magic"], ["m.onnx", "a.png", "--mean", "x"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
    assert "usage: dlheatmap" in capsys.readouterr().err


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("usage: dlheatmap", "ONNX classification model", "--method",
                   "grad_cam", "guided_grad_cam", "--target-conv-layer", "--color-scheme",
                   "results.jsonl", "exit status", "examples:"):
        assert phrase in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_help_lists_halcon_methods_first_then_grad_cam_relatives(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    order = ["grad_cam", "guided_grad_cam", "grad_cam_plus_plus", "xgrad_cam", "layer_cam",
             "hires_cam", "score_cam", "eigen_cam", "saliency", "guided_backprop"]
    assert sorted(order) == sorted(cli.METHODS)
    positions = [text.index(f" {name}: ") for name in order]
    assert positions == sorted(positions)


def test_explain_layer_methods_take_the_relu_after_a_conv(tmp_path, model_path):
    """LayerCAM at the Relu of the identity model: the gradient of class 0 is the same
    positive number everywhere, so the map is the Relu's output, the preprocessed image."""
    image = blob_image()
    Image.fromarray(image).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert run_cli(model_path, tmp_path / "a.png", "-o", out, "--method", "layer_cam",
                   "--target-conv-layer", "relu", "--range-min", "0", "--range-max", "1",
                   "-q") == cli.EXIT_OK
    (record,) = read_results(out / "results.jsonl")
    heat, _, _ = expected_heatmap(image)
    assert record["heatmap"]["mean"] == pytest.approx(heat.mean(), rel=1e-5)


def test_adding_a_method_is_one_entry(tmp_path, model_path, monkeypatch):
    calls = []

    def fake(model, samples, target, gen):
        calls.append(len(samples))
        return [{"classification_class_ids": [0, 1], "classification_class_names": ["a", "b"],
                 "classification_confidences": [0.9, 0.1],
                 "heatmap_fake": {"fake_image_class_0": np.ones((SIZE, SIZE), np.float32)}}
                for _ in samples]

    monkeypatch.setitem(cli.METHODS, "fake", cli.Method("fake", "map", fake, "a test method"))
    Image.fromarray(blob_image()).save(tmp_path / "a.png")
    assert run_cli(model_path, tmp_path / "a.png", "-o", tmp_path / "o", "-m", "fake",
                   "-q") == 0
    assert calls == [1]
    (record,) = read_results(tmp_path / "o" / "results.jsonl")
    assert record["method"] == "fake" and record["heatmap"]["area_above_half"] == 1.0


def test_picture_that_cannot_be_written_is_a_failed_image(tmp_path, model_path, capsys):
    Image.fromarray(blob_image()).save(tmp_path / "a.png")
    out = tmp_path / "out"
    (out / "a_grad_cam.png").mkdir(parents=True)  # a folder where the picture should go
    assert run_cli(model_path, tmp_path / "a.png", "-o", out) == cli.EXIT_SOME_FAILED
    (record,) = read_results(out / "results.jsonl")
    assert record["error_code"] == 5212
    assert "a.png" in capsys.readouterr().err


@pytest.mark.parametrize("method", [name for name in cli.METHODS
                                    if name not in ("grad_cam", "guided_grad_cam")])
def test_explain_methods_through_the_command(tmp_path, model_path, method):
    """Every method of dlheatmap.explain is offered, and the command reports exactly what
    explain() computes on the preprocessed image."""
    import dlheatmap as dl

    image = blob_image()
    Image.fromarray(image).save(tmp_path / "blob.png")
    out = tmp_path / "out"
    status = run_cli(model_path, tmp_path / "blob.png", "-o", out, "--method", method,
                     "--range-min", "0", "--range-max", "1", "-q")
    assert status == cli.EXIT_OK
    (record,) = read_results(out / "results.jsonl")
    assert record["method"] == method and Path(record["overlay"]).is_file()

    _, small, _ = expected_heatmap(image)
    explained = dl.explain(str(model_path), small[None, :, :, None].astype(np.float32), method)
    assert record["class_id"] == int(explained.class_ids[0, 0])
    heat = explained.heatmaps[0, 0]
    if explained.kind == "map":
        assert record["heatmap"]["max"] == pytest.approx(float(heat.max()), rel=1e-5, abs=1e-7)
        assert record["heatmap"]["mean"] == pytest.approx(float(heat.mean()), rel=1e-4, abs=1e-7)
