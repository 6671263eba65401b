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


def _table_rows() -> list[list[str]]:
    rows = []
    for line in COVERAGE.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("| Model"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_coverage_table_matches_the_matrix():
    """spec/coverage.md lists every case, in order, with the result the matrix expects;
    regenerate it with ``python -m tests.zoo --write spec/coverage.md``."""
    text = COVERAGE.read_text()
    assert text.split("| Model")[0] == zoo.coverage_table([]).split("| Model")[0]
    rows = _table_rows()
    assert [(row[0], row[1]) for row in rows] == [(c.model, c.exporter) for c in zoo.CASES]
    for row, case in zip(rows, zoo.CASES, strict=True):
        expected = "pass" if case.failure is None else f"HALCON error {case.failure.code}"
        assert row[5].startswith(expected), (case.id, row[5])
        assert re.fullmatch(r"\d+", row[2]), (case.id, row[2])
