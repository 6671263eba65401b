"""onnxruntime sessions."""

from __future__ import annotations

import onnx
import onnxruntime as ort

from dlheatmap.errors import HOperatorError
from dlheatmap.runtime.devices import Device


def make_session(model: onnx.ModelProto, device: Device, operator: str) -> ort.InferenceSession:
    """An inference session for ``model`` on ``device``.

    Raises
    ------
    HOperatorError
        7801 if onnxruntime cannot load the graph (unsupported op, broken graph).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3  # keep onnxruntime's own warnings out of users' logs
    try:
        return ort.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=device.ort_providers
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise HOperatorError(7801, f"onnxruntime cannot run this graph: {exc}", operator) from exc
