"""onnxruntime sessions."""

from __future__ import annotations

import os

import onnx
import onnxruntime as ort

from dlheatmap.errors import ErrorCode, HOperatorError
from dlheatmap.graph import undefined_ops
from dlheatmap.runtime.devices import Device


def make_session(
    model: onnx.ModelProto, device: Device, operator: str, spin: bool = True
) -> ort.InferenceSession:
    """An inference session for ``model`` on ``device``.

    Raises
    ------
    HOperatorError
        7801 if onnxruntime cannot load the graph (unsupported op, broken graph).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures surface as HOperatorError, not as log lines
    # onnxruntime ignores OMP_NUM_THREADS; honour it as torch does, so that a process given
    # N CPUs (a Ray actor, a container) runs N threads instead of one per core of the node
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        options.intra_op_num_threads = int(threads)
    if not spin:
        # Worker threads busy-wait between ops, which keeps a run fast, and go on busy-waiting
        # after it, which starves the torch threads that compute gradients right after a
        # heatmap's run: stop them when the run returns.
        options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        return ort.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=device.ort_providers
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise HOperatorError(
            ErrorCode.READ_ONNX,
f"onnxruntime cannot run this graph: {exc}{undefined_ops(model)}", operator
        ) from exc
