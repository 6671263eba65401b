"""Converting a model to another precision for inference: the Pythonic core behind
optimize_dl_model_for_inference.

'float32' is a copy; 'float16' is onnxruntime's float16 conversion with float32 inputs and
outputs kept (so samples and results do not change type); 'int8' is onnxruntime's static
quantisation in QDQ format, calibrated on the given images. Every converted handle runs
apply_dl_model in onnxruntime and every heatmap method (torch differentiates float16 graphs in
float32 and QDQ pairs with a straight-through gradient; spec/decisions.md, "Converted
models"). :func:`conversion_report` measures how far the converted outputs are from the
original's.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from dlheatmap.engine import forward_scores
from dlheatmap.graph import QDQ_OPS
from dlheatmap.model import Model, pad_batch
from dlheatmap.params import ModelParams
from dlheatmap.runtime.devices import DLDevice


def _float32(model: onnx.ModelProto, images: np.ndarray, handle: Model,
             options: Mapping[str, Any]) -> onnx.ModelProto:
    return model


def _float16(model: onnx.ModelProto, images: np.ndarray, handle: Model,
             options: Mapping[str, Any]) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():  # it warns for every weight it rounds; the report measures
        warnings.simplefilter("ignore")
        return convert_float_to_float16(model, keep_io_types=True)


def _int8(model: onnx.ModelProto, images: np.ndarray, handle: Model,
          options: Mapping[str, Any]) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="dlheatmap-int8-") as folder, _quiet_root_log():
        output = Path(folder) / "int8.onnx"
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # the quantiser moves the weights of the model it is given out
        quantize_static(copy, output, _Calibration(handle, images),
                        quant_format=QuantFormat.QDQ,
                        per_channel=options["per_channel"] == "true",
                        calibrate_method=methods[options["calibration_method"]])
        return onnx.load(output)


@contextlib.contextmanager
def _quiet_root_log() -> Iterator[None]:
    """onnxruntime's quantiser logs advice on the root logger at every call."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


#: precision -> conversion of the normalised graph (calibration images, handle, GenParam)
CONVERSIONS: dict[str, Callable[..., onnx.ModelProto]] = {
    "float32": _float32, "float16": _float16, "int8": _int8,
}


class _Calibration:
    """onnxruntime's CalibrationDataReader over validated N x H x W x C images: one feed per
    batch of the model's batch size (padded for a fixed batch dimension)."""

    def __init__(self, model: Model, images: np.ndarray):
        params = model.params
        name = model.info.image_input.name
        self._feeds = iter([
            {name: model.to_model_layout(pad_batch(images[start:stop], padded))}
            for start, stop, padded in model.batches(len(images), params)])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def convert_model(model: Model, device: DLDevice, precision: str, images: np.ndarray,
                  options: Mapping[str, Any], operator: str) -> Model:
    """A new handle on ``model`` converted to ``precision``, set to run on ``device``.

    ``images`` (N x H x W x C float32, validated) calibrate 'int8'; ``options`` are the
    GenParam values ('calibration_method', 'per_channel').
    """
    graph = CONVERSIONS[precision](model.info.model, images, model, options)
    source = f"{model.source or 'memory'} ({precision})"
    return model.derived(graph, source, operator, runtime=device.kind, gpu=device.index)


def conversion_report(original: Model, converted: Model, device: DLDevice, precision: str,
                      images: np.ndarray, params: ModelParams) -> dict[str, Any]:
    """What was converted, and how much the converted confidences differ on ``images``.

    Keys: 'precision', 'device' (its name), 'converted_initializers' (weights stored in the
    new type), 'converted_op_types' (op types that read them, directly or through a
    DequantizeLinear), 'added_nodes' (Casts or QDQ nodes), 'num_calibration_samples', and
    over those samples (None without samples) 'max_abs_confidence_difference',
    'mean_abs_confidence_difference' and 'top1_agreement' (fraction of samples whose best
    class is the same).
    """
    before, after = original.info.model.graph, converted.info.model.graph
    types = {init.name: init.data_type for init in before.initializer}
    changed = {init.name for init in after.initializer
               if init.name not in types or types[init.name] != init.data_type}
    report: dict[str, Any] = {
        "precision": precision,
        "device": device.name,
        "converted_initializers": len(changed),
        "converted_op_types": _readers(after, changed),
        "added_nodes": len(after.node) - len(before.node),
        "num_calibration_samples": len(images),
        "max_abs_confidence_difference": None,
        "mean_abs_confidence_difference": None,
        "top1_agreement": None,
    }
    if len(images):
        ours = forward_scores(original, images, params)
        theirs = forward_scores(converted, images, converted.params)
        difference = np.abs(ours.astype(np.float64) - theirs)
        report.update(
            max_abs_confidence_difference=float(difference.max()),
            mean_abs_confidence_difference=float(difference.mean()),
            top1_agreement=float(np.mean(ours.argmax(axis=1) == theirs.argmax(axis=1))))
    return report


def _readers(graph: onnx.GraphProto, changed: set[str]) -> list[str]:
    """Sorted op types of the computing nodes that read a tensor of ``changed``, directly or
    through a DequantizeLinear."""
    reached = set(changed)
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in reached:
            reached.update(node.output)
    return sorted({node.op_type for node in graph.node
                   if node.op_type not in QDQ_OPS and node.op_type != "Cast"
                   and reached.intersection(node.input)})
