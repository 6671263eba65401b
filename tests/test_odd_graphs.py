"""Odd graphs (segmentation, detection, several inputs or outputs, integer input) are read,
every parameter can be queried, and the operators refuse them with their documented codes
(spec/decisions.md prescribes the model type of each)."""

from __future__ import annotations

import pytest

import dlheatmap as dl
from tests import conformance_fixtures as cf
from tests.operator_calls import SPEC

ODD_MODELS = {
    # file builder -> the model type spec/decisions.md prescribes for it
    "segmentation": (cf.segmentation_path, "segmentation"),
    "two_inputs": (cf.two_inputs_path, "generic"),
    "two_outputs": (cf.two_outputs_path, "detection"),
    "detection": (cf.detection_path, "detection"),
    "yolo_like": (cf.yolo_like_path, "generic"),
    "integer_input": (cf.integer_input_path, "generic"),
}


@pytest.mark.parametrize("name", list(ODD_MODELS))
def test_odd_graphs_are_read_then_refused(name):
    build, model_type = ODD_MODELS[name]
    handle = dl.read_dl_model(build())
    assert dl.get_dl_model_param_s(handle, "type") == model_type
    for parameter in SPEC.parameters:  # every parameter can be read, 'summary' included
        assert isinstance(dl.get_dl_model_param(handle, parameter), list)
    sample = {"image": cf.valid_image(size=8)}
    with pytest.raises(dl.HOperatorError) as raised:
        dl.apply_dl_model(handle, sample, [])
    assert raised.value.error_code == 7912
    for method in ("grad_cam", "guided_grad_cam"):
        with pytest.raises(dl.HOperatorError) as raised:
            dl.gen_dl_model_heatmap(handle, sample, method, [], None)
        assert raised.value.error_code == 7851


