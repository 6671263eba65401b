"""The model zoo: real classifier architectures from several exporters, end to end.

Every case of ``tests/zoo.py`` runs through read_dl_model, apply_dl_model and both heatmap
methods and is compared with truths computed without dlheatmap (onnxruntime on the original
file, autograd on the original torch module, finite differences); see ``tests/zoo.py``.
Exports are cached on disk (tests/models.py), so only a cold cache pays for them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import zoo

COVERAGE = Path(__file__).parents[1] / "spec" / "coverage.md"


@pytest.mark.parametrize("case", zoo.CASES, ids=[case.id for case in zoo.CASES])
def test_zoo_case(case):
    outcome = zoo.check(case)
    assert outcome.opset >= 9
    if case.failure is None:
        assert outcome.layer != "-"
    # spec/coverage.md shows what this run found: the opset the file declares, the input
    # size, the default target layer (found independently of dlheatmap), the result
    expected = zoo.table_row(case, outcome, zoo.result_text(case))
    row = _table_lines()[zoo.CASES.index(case)]
    assert row == expected, (
        f"spec/coverage.md is out of date for {case.id} (regenerate it with "
        f"`python -m tests.zoo --write spec/coverage.md`):\n  file: {row}\n  run:  {expected}")


def test_matrix_covers_the_required_architectures():
    families = {case.model.split(" (")[0].split(",")[0] for case in zoo.CASES}
    required = ["ResNet", "ResNeXt", "DenseNet", "VGG", "MobileNet v2", "MobileNet v3",
                "EfficientNet", "RegNet", "ShuffleNet", "SqueezeNet", "MNASNet", "GoogLeNet",
                "ConvNeXt", "PP-LCNet", "PP-OCR"]
    for family in required:
        assert any(name.startswith(family) for name in families), family
    legacy = {case.model for case in zoo.CASES if case.exporter == "torch.onnx legacy"}
    dynamo = {case.model for case in zoo.CASES if case.exporter == "torch.onnx dynamo"}
    assert len(legacy) >= 13 and len(dynamo) >= 5


def test_every_torchvision_architecture_has_both_exporters():
    """Each architecture of zoo.TORCHVISION is exported by the legacy and the dynamo exporter,
    unless zoo.DYNAMO_UNSUPPORTED gives the reason it cannot be (shown in its note)."""
    by_id = {case.id: case for case in zoo.CASES}
    assert len(by_id) == len(zoo.CASES), "case ids must be unique"
    for title, name, _ in zoo.TORCHVISION:
        legacy = by_id.get(f"{name}-legacy")
        assert legacy is not None and legacy.exporter == "torch.onnx legacy", name
        assert legacy.model == title and legacy.failure is None, name
        dynamo = by_id.get(f"{name}-dynamo")
        reason = zoo.DYNAMO_UNSUPPORTED.get(name)
        if reason is None:
            assert dynamo is not None and dynamo.exporter == "torch.onnx dynamo", (
                f"{name} has no dynamo case and no reason in zoo.DYNAMO_UNSUPPORTED")
            assert dynamo.model == title and dynamo.failure is None, name
        else:
            assert dynamo is None and reason.strip() and reason in legacy.note, name
    assert set(zoo.DYNAMO_UNSUPPORTED) <= {name for _, name, _ in zoo.TORCHVISION}


def _table_lines() -> list[str]:
    return [line for line in COVERAGE.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| Model")]


def _table_rows() -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in _table_lines()]


def test_coverage_table_matches_the_matrix():
    """spec/coverage.md lists every case, in order, with the result the matrix expects;
    regenerate it with ``python -m tests.zoo --write spec/coverage.md``. The columns only a
    run can know (opset, input size, default target layer) are compared with the run in
    test_zoo_case."""
    text = COVERAGE.read_text()
    assert text.split("| Model")[0] == zoo.coverage_table([]).split("| Model")[0]
    rows = _table_rows()
    assert [(row[0], row[1]) for row in rows] == [(c.model, c.exporter) for c in zoo.CASES]
    for row, case in zip(rows, zoo.CASES, strict=True):
        expected = "pass" if case.failure is None else f"HALCON error {case.failure.code}"
        assert row[5].startswith(expected), (case.id, row[5])
        assert re.fullmatch(r"\d+", row[2]), (case.id, row[2])


_NO_TORCH = """
import json, sys
import numpy as np
import dlheatmap as dl

for entry in json.loads(sys.argv[1]):
    model = dl.read_dl_model(entry["path"])
    if entry["size"]:
        dl.set_dl_model_param(model, "image_height", entry["size"][0])
        dl.set_dl_model_param(model, "image_width", entry["size"][1])
    width, height, channels = dl.get_dl_model_param(model, "image_dimensions")
    images = np.random.default_rng(0).uniform(-1, 1, (2, height, width, channels))
    images = images.astype(np.float32)
    samples = [{"image": image} for image in images]
    for method in ("grad_cam", "guided_grad_cam"):
        dl.gen_dl_model_heatmap(model, samples, method, [], None)
    for method in ("saliency", "guided_backprop", "grad_cam", "grad_cam_plus_plus",
                   "layer_cam", "guided_grad_cam"):
        dl.explain(model, images, method, targets=[[0, 1], [1, 0]])
    dl.explain(model, images, "grad_cam", score="probability")
    assert "torch" not in sys.modules, entry["path"]
print("no torch")
"""


@pytest.mark.slow
def test_onnxruntime_path_never_imports_torch():
    """Grad-CAM, Guided Grad-CAM and explain's gradient methods (several classes per sample,
    the probability as the score) on every working zoo architecture and packaged model run on
    onnxruntime alone: a fresh process that ran them all has not imported torch."""
    import json
    import subprocess
    import sys

    entries = [{"path": str(case.build()), "size": case.size} for case in zoo.CASES
               if case.failure is None]
    done = subprocess.run([sys.executable, "-c", _NO_TORCH, json.dumps(entries)],
                          capture_output=True, text=True, timeout=1500,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 0 and "no torch" in done.stdout, done.stderr[-3000:]
