"""The examples run end to end, on the shipped demo model and the demo images.

Truth: the demo images are drawn with a known class and shape centre (``truth.json``); the
pictures and results the examples write must name that class and put the heatmap's peak on
the shape. The drop-in script is checked to use only names HALCON's Python interface has.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MODEL = EXAMPLES / "models" / "shapes.onnx"
# Pixels in the 128 x 128 demo images, where shapes are 20 to 30 pixels across: the heatmap's
# strength-weighted centre must sit on the shape's centre, its peak on the shape (a ring's
# peak is on the ring, up to its radius away from the centre).
CENTROID_DISTANCE = 5
PEAK_DISTANCE = 16

# Names of HALCON's Python interface (module `halcon`, 22.11 and later) the drop-in script may
# use: operators, HDevEngine classes and the error class.
HALCON_NAMES = {
    "read_dl_model", "set_dl_model_param", "get_dl_model_param", "get_dl_model_param_s",
    "clear_dl_model", "apply_dl_model", "gen_dl_model_heatmap", "gen_dl_model_heatmap_s",
    "create_dict", "set_dict_tuple", "get_dict_tuple", "get_dict_tuple_s", "set_dict_object",
    "get_dict_object", "get_dict_param", "read_image", "write_image", "dump_window",
    "dump_window_image", "HDevEngine", "HDevProcedure", "HDevProcedureCall", "HOperatorError",
    "HError",
}


def run_script(script: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory):
    """The demo images and their truth, written by examples/demo_model.py."""
    assert MODEL.is_file(), "examples/models/shapes.onnx is shipped with the repository"
    sys.path.insert(0, str(EXAMPLES))
    try:
        from demo_model import write_demo_images
    finally:
        sys.path.remove(str(EXAMPLES))
    folder = tmp_path_factory.mktemp("demo") / "images"
    paths = write_demo_images(folder)
    truth = json.loads((folder / "truth.json").read_text())
    return paths, truth


def near(point: dict, truth: dict, distance: float) -> bool:
    return np.hypot(point["x"] - truth["x"], point["y"] - truth["y"]) <= distance


def test_demo_main_job(tmp_path):
    done = run_script("demo.py", "--out", tmp_path / "demo", cwd=ROOT)
    assert "Look at the pictures" in done.stdout
    truth = json.loads((tmp_path / "demo" / "images" / "truth.json").read_text())
    for method in ("grad_cam", "guided_grad_cam"):
        folder = tmp_path / "demo" / method
        records = [json.loads(line) for line in (folder / "results.jsonl").read_text()
                   .splitlines()]
        assert len(records) == len(truth) == len(list(folder.glob("*.png")))
        for record in records:
            expected = truth[Path(record["image"]).name]
            assert record["class_name"] == expected["class_name"], record
            assert near(record["heatmap"]["peak"], expected, PEAK_DISTANCE), record
            assert near(record["heatmap"]["centroid"], expected, CENTROID_DISTANCE), record
            with Image.open(record["overlay"]) as pil:
                assert pil.width == 3 * 128  # 128 x 128 images drawn 3 times as large


def test_hdevelop_port(tmp_path, demo_images):
    paths, truth = demo_images
    out = tmp_path / "port"
    done = run_script("hdevelop_port_heatmap.py", MODEL, paths[0].parent, out, cwd=tmp_path)
    lines = [line for line in done.stdout.splitlines() if line.startswith(str(paths[0].parent))]
    assert len(lines) == len(truth)
    for line in lines:
        name = Path(line.split(":")[0]).name
        assert f": {truth[name]['class_name']} (" in line
    assert len(list(out.glob("*_grad_cam.png"))) == 2 * len(truth)  # incl. guided_grad_cam


def test_dropin_script_runs_and_writes_heatmaps(tmp_path, demo_images):
    paths, truth = demo_images
    out = tmp_path / "dropin"
    run_script("halcon_dropin_script.py", MODEL, out, *paths, cwd=tmp_path)
    for index, path in enumerate(paths):
        heatmap = tifffile.imread(out / f"heatmap_{index}.tif")
        assert heatmap.dtype == np.float32 and heatmap.shape == (64, 64)
        rows, cols = np.mgrid[0:64, 0:64]
        weights = heatmap / heatmap.sum()
        centre = {"x": ((cols * weights).sum() + 0.5) * 2 - 0.5,  # 64 -> 128 pixels
                  "y": ((rows * weights).sum() + 0.5) * 2 - 0.5}
        assert near(centre, truth[path.name], CENTROID_DISTANCE), path.name
        with Image.open(out / f"overlay_{index}.png") as pil:
            assert pil.mode == "RGB" and pil.width >= 320


def test_dropin_script_is_halcon_code():
    """Only the import names dlheatmap; every `ha.` name exists in HALCON's interface."""
    source = (EXAMPLES / "halcon_dropin_script.py").read_text()
    tree = ast.parse(source)
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    dlheatmap_imports = [ast.unparse(node) for node in imports
                         if "dlheatmap" in ast.unparse(node)]
    assert dlheatmap_imports == ["import dlheatmap.halcon as ha"]
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "ha"}
    assert used and used <= HALCON_NAMES, used - HALCON_NAMES
    import dlheatmap.halcon as ha

    assert all(hasattr(ha, name) for name in used)


def test_hdevelop_port_pairs_every_statement_with_hdevelop():
    """In the ported function, each statement follows a comment holding an HDevelop line."""
    source = (EXAMPLES / "hdevelop_port_heatmap.py").read_text().splitlines()
    tree = ast.parse("\n".join(source))
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef)
                    and node.name == "explain_folder")
    statements = [node for node in ast.walk(function)
                  if isinstance(node, (ast.Assign, ast.Expr, ast.For))
                  and not isinstance(getattr(node, "value", None), ast.Constant)]
    halcon_calls = [node for node in statements if "ha." in ast.unparse(node)]
    assert len(halcon_calls) >= 15
    for node in halcon_calls:
        assert source[node.lineno - 2].strip().startswith("# "), ast.unparse(node)


def test_hdevelop_workflow_port(tmp_path, demo_images):
    """Grad-CAM and the confidence-based heatmap side by side, then a float16 model: every
    image's class, both heatmaps' peaks on the shape (model pixels: the demo model's input is
    64 x 64, half the images' size), the float16 model's class and Grad-CAM peak the same."""
    paths, truth = demo_images
    out = tmp_path / "workflow"
    done = run_script("hdevelop_port_workflow.py", MODEL, paths[0].parent, out, cwd=tmp_path)
    assert "float16 conversion:" in done.stdout
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == len(truth) == len(list(out.glob("*_heatmaps.png")))
    for record in records:
        expected = truth[Path(record["image"]).name]
        centre = {"x": (expected["x"] + 0.5) / 2 - 0.5, "y": (expected["y"] + 0.5) / 2 - 0.5}
        assert record["class_name"] == record["float16_class_name"] == expected["class_name"]
        for key in ("grad_cam_peak", "confidence_based_peak", "float16_grad_cam_peak"):
            assert near(record[key], centre, PEAK_DISTANCE / 2), (key, record)
        assert record["float16_grad_cam_peak"] == record["grad_cam_peak"]
    with Image.open(out / "0_heatmaps.png") as pil:  # two pictures of 320 side by side
        assert pil.width == 2 * 320


def test_hdevelop_workflow_pairs_every_statement_with_hdevelop():
    source = (EXAMPLES / "hdevelop_port_workflow.py").read_text().splitlines()
    tree = ast.parse("\n".join(source))
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef)
                    and node.name == "run_workflow")
    calls = [node for node in ast.walk(function)
             if isinstance(node, (ast.Assign, ast.Expr)) and "ha." in ast.unparse(node)]
    assert len(calls) >= 20
    for node in calls:
        assert source[node.lineno - 2].strip().startswith("# "), ast.unparse(node)
