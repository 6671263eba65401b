"""read_dl_model, get/set_dl_model_param, apply_dl_model, clear_dl_model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from dlheatmap.errors import ErrorCode, wrong_count, wrong_type, wrong_value
from dlheatmap.graph import graph_precision
from dlheatmap.model import Model
from dlheatmap.operators._args import (
    check_outputs,
    classification_model,
    model_handle,
    running_graph,
    sorted_results,
    string_arg,
)
from dlheatmap.runtime.devices import device_handle
from dlheatmap.samples import as_sample_list, images_from_samples
from dlheatmap.spec import load_spec, operator_spec
from dlheatmap.summary import summary_lines
from dlheatmap.values import empty_tuple


def read_dl_model(file_name: str | os.PathLike) -> Model:
    """Read an ONNX classification model.

    Parameters
    ----------
    file_name : str or path-like
        Path of an ``.onnx`` file.

    Returns
    -------
    Model
        The model handle.

    Raises
    ------
    HOperatorError
        1201 if ``file_name`` is not a string or path, 1401 for several of them; 7801 if the
        file is missing, empty, not ONNX, or fails ONNX's checks.

    Examples
    --------
    >>> model = read_dl_model("classifier.onnx")  # doctest: +SKIP
    >>> get_dl_model_param_s(model, "type")  # doctest: +SKIP
    'classification'
    """
    operator = "read_dl_model"
    if isinstance(file_name, (list, tuple)) and len(file_name) == 1:
        file_name = file_name[0]
    if isinstance(file_name, (list, tuple)):
        raise wrong_count(1, f"FileName takes one path, got {len(file_name)}", operator)
    if not isinstance(file_name, (str, os.PathLike)):
        raise wrong_type(1, f"FileName must be a path, got {type(file_name).__name__}", operator)
    return Model.from_file(file_name, operator)


def clear_dl_model(handle: Model) -> None:
    """Free the model's sessions and modules; the handle is invalid afterwards.

    Raises HOperatorError 2450 for a handle that is not a model or was already cleared.
    Calls running on the handle in other threads finish or raise 2450
    (spec/reliability.md).
    """
    model_handle(handle, "clear_dl_model").clear()


def get_dl_model_param(handle: Model, name: str) -> list:
    """A model parameter as a list (HALCON tuple).

    Parameters
    ----------
    handle : Model
    name : str
        One of the parameters in ``spec/operators.toml`` (type, class_ids, class_names,
        image_width, image_height, image_num_channels, image_dimensions, image_range_min,
        image_range_max, batch_size, runtime, gpu, device, precision, input_layout, summary).

    Raises
    ------
    HOperatorError
        2450 for a bad handle, 1202 if ``name`` is not a string, 1402 for several names,
        1302 if it is unknown; 7801 for 'summary' of a graph that onnxruntime cannot load.
    """
    value = _param_value(handle, name, "get_dl_model_param")
    return list(value) if isinstance(value, (list, tuple)) else [value]


def get_dl_model_param_s(handle: Model, name: str) -> Any:
    """A single-valued model parameter as a plain value.

    Raises HOperatorError 1402 for a parameter that currently holds several values (use
    get_dl_model_param for those).
    """
    operator = "get_dl_model_param_s"
    value = _param_value(handle, name, operator)
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise wrong_count(2, f"{name} holds {len(value)} values", operator)
        return value[0]
    return value


def set_dl_model_param(handle: Model, name: str, value: Any) -> None:
    """Set a model parameter.

    Raises
    ------
    HOperatorError
        2450 bad handle; 1202/1302/1402 bad or unknown name; 7788 read-only parameter (also
        ``image_dimensions`` changing a dimension the file fixes); 1203/1303/1403 wrong type,
        value or count of ``value``; 7792 duplicate class IDs. A refused value changes nothing.
    """
    operator = "set_dl_model_param"
    model = model_handle(handle, operator)
    name = _param_name(name, operator)
    model.set_param(name, value, operator, position=3)


def apply_dl_model(handle: Model, samples: Any, outputs: Any = None) -> list[dict]:
    """Classify samples.

    Parameters
    ----------
    handle : Model
    samples : dict or sequence of dict
        Each with 'image': a float array of image_height x image_width (x channels).
    outputs : sequence of str, optional
        Result keys to return; [] or None for all.

    Returns
    -------
    list of dict
        One per sample: 'classification_class_ids', 'classification_class_names',
        'classification_confidences', all classes, best first.

    Raises
    ------
    HOperatorError
        2450 bad handle; 1202/1402/7783/1302 bad samples (1302 also for images whose model
        output overflows); 1203/1303 bad Outputs; 7912 model not a classifier; 7801 a graph
        that onnxruntime cannot load or run, or that returns another number of classes than it
        declares or non-finite results for any image. The handle's parameters and the
        arguments are unchanged after an error.
    """
    operator = "apply_dl_model"
    model = model_handle(handle, operator)
    params = model.params
    sample_list = as_sample_list(samples, operator, 2)
    wanted = _outputs(outputs, operator)
    classification_model(model, ErrorCode.UNSUPPORTED_MODEL, operator)
    images = images_from_samples(sample_list, params, operator, 2)
    with running_graph(operator):
        probabilities = classify(model, images, params)
    check_outputs(model, params, operator, probabilities)
    results = sorted_results(probabilities, params)
    return [{key: result[key] for key in wanted} for result in results]


def classify(model: Model, images, params):
    """Class probabilities [N, classes] for validated images, batch by batch."""
    import numpy as np

    from dlheatmap.model import pad_batch

    parts = []
    device = model.device_for(params)
    for start, stop, padded in model.batches(len(images), params):
        (output,) = model.run(pad_batch(images[start:stop], padded), (), device)
        parts.append(model.probabilities(output)[: stop - start])
    return np.concatenate(parts)


def _outputs(outputs: Any, operator: str) -> list[str]:
    allowed = operator_spec(operator).extra["outputs"]
    if empty_tuple(outputs):
        return list(allowed)
    if isinstance(outputs, str):
        outputs = [outputs]
    if not isinstance(outputs, Sequence) or not all(isinstance(o, str) for o in outputs):
        raise wrong_type(3, "Outputs must be a sequence of result key strings", operator)
    unknown = [o for o in outputs if o not in allowed]
    if unknown:
        raise wrong_value(3, f"unknown outputs {unknown}; allowed: {allowed}", operator)
    return list(outputs)


def _param_name(name: Any, operator: str) -> str:
    name = string_arg(name, 2, "GenParamName", operator)
    if name not in load_spec().parameters:
        raise wrong_value(
            2, f"unknown model parameter {name!r}; known: {sorted(load_spec().parameters)}",
            operator)
    return name


def _param_value(handle: Model, name: Any, operator: str) -> Any:
    model = model_handle(handle, operator)
    name = _param_name(name, operator)
    params = model.params
    info = model.info
    computed = {
        "type": lambda: info.model_type,
        "image_dimensions": lambda: [params.image_width, params.image_height,
                                     params.image_num_channels],
        "precision": lambda: graph_precision(info),
        "device": lambda: device_handle(params.runtime, params.gpu),
        "input_layout": lambda: info.image_input.layout if info.image_input else "NCHW",
        "summary": lambda: summary_lines(model),
    }
    if name in computed:
        return computed[name]()
    value = getattr(params, name)
    return list(value) if isinstance(value, tuple) else value
