"""query_available_dl_devices, get_dl_device_param and optimize_dl_model_for_inference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dlheatmap.errors import ErrorCode, HOperatorError, wrong_count, wrong_type, wrong_value
from dlheatmap.operators._args import (
    classification_model,
    empty_tuple,
    gen_options,
    is_integer,
    model_handle,
    running_graph,
    string_arg,
)
from dlheatmap.optimize import conversion_report, convert_model
from dlheatmap.params import short_repr
from dlheatmap.runtime.devices import DLDevice, available_devices
from dlheatmap.samples import as_sample_list, images_from_samples
from dlheatmap.spec import operator_spec

QUERY = "query_available_dl_devices"
DEVICE_PARAM = "get_dl_device_param"
OPTIMIZE = "optimize_dl_model_for_inference"


def _optimize_params(device: DLDevice) -> dict[str, Any]:
    """The GenParam dict for optimize_dl_model_for_inference on ``device``: its defaults."""
    specs = operator_spec(OPTIMIZE).gen_params
    return {name: spec.default for name, spec in specs.items()}


def _precisions(device: DLDevice) -> list[str]:
    return list(operator_spec(OPTIMIZE).extra["precisions"])


def _calibrated(device: DLDevice) -> list[str]:
    return list(operator_spec(OPTIMIZE).extra["calibrated"])


# get_dl_device_param: name -> value of a device (names listed in spec/operators.toml)
DEVICE_PARAMS: dict[str, Callable[[DLDevice], Any]] = {
    "name": lambda device: device.name,
    "type": lambda device: device.kind,
    "id": lambda device: device.index,
    "runtime": lambda device: device.kind,
    # 'none': the device is run by dlheatmap's own runtime (onnxruntime), as HALCON says of
    # its own CPU and GPU devices; the provider is named by 'execution_provider'.
    "ai_accelerator_interface": lambda device: "none",
    "execution_provider": lambda device: device.provider,
    "precisions": _precisions,
    "cast_precisions": lambda device: [p for p in _precisions(device)
                                       if p not in _calibrated(device)],
    "calibration_precisions": _calibrated,
    "conversion_supported": lambda device: "true",
    "inference_only": lambda device: "false",
    "optimize_for_inference_params": _optimize_params,
    "settable_device_params": lambda device: {},
}


def query_available_dl_devices(gen_param_name: Any = None, gen_param_value: Any = None
                               ) -> list[DLDevice]:
    """The devices dlheatmap can run on, filtered (HALCON's query_available_dl_devices).

    Parameters
    ----------
    gen_param_name, gen_param_value : str or sequence of str (or int for 'id'), equally long
        Filters: 'runtime' or 'type' ('cpu', 'gpu'), 'id', 'name', 'ai_accelerator_interface'.
        Values of the same name are alternatives and order the result (['gpu', 'cpu']: GPUs
        first); different names must all match. Empty: every device, the CPU first.

    Returns
    -------
    list of DLDevice
        The CPU is always available; a GPU only where onnxruntime offers its CUDA provider.

    Raises
    ------
    HOperatorError
        1201/1202 names or values of the wrong type, 1301 an unknown name, 1302 a value a
        name does not take, 1402 not one value per name.
    """
    names = _tuple(gen_param_name)
    values = _tuple(gen_param_value)
    if len(names) != len(values):
        raise wrong_count(2, f"GenParamValue: {len(values)} values for {len(names)} names",
                          QUERY)
    filters = operator_spec(QUERY).extra["filters"]
    wanted: dict[str, list] = {}
    for name, value in zip(names, values, strict=True):
        if not isinstance(name, str):
            raise wrong_type(1, f"GenParamName must be strings, got {short_repr(name)}", QUERY)
        if name not in filters:
            raise wrong_value(1, f"GenParamName {name!r} is not one of {sorted(filters)}", QUERY)
        expected = is_integer if name == "id" else (lambda item: isinstance(item, str))
        if not expected(value):
            raise wrong_type(2, f"GenParamValue for {name!r}: {short_repr(value)} has the "
                             "wrong type", QUERY)
        if filters[name] and value not in filters[name]:
            raise wrong_value(2, f"GenParamValue for {name!r}: {value!r} is not one of "
                              f"{filters[name]}", QUERY)
        wanted.setdefault(name, []).append(value)
    devices = [device for device in available_devices()
               if all(DEVICE_PARAMS[name](device) in accepted
                      for name, accepted in wanted.items())]
    if wanted:  # order by the first filter's values, as they were given
        name, accepted = next(iter(wanted.items()))
        devices.sort(key=lambda device: accepted.index(DEVICE_PARAMS[name](device)))
    return devices


def _tuple(value: Any) -> list:
    if empty_tuple(value):
        return []
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) \
        else [value]


def device_arg(value: Any, position: int, operator: str) -> DLDevice:
    """A single device handle (a one-element tuple of one is accepted); 2450 otherwise."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, DLDevice):
        raise HOperatorError(ErrorCode.UNKNOWN_HANDLE, f"DLDevice must be a device handle from "
                             f"query_available_dl_devices, got {type(value).__name__}", operator)
    return value


def get_dl_device_param(dl_device: Any, gen_param_name: Any) -> list:
    """A device parameter as a list (HALCON tuple); a dict parameter as a one-element list.

    Names are those of :data:`DEVICE_PARAMS` (spec/operators.toml lists them).

    Raises
    ------
    HOperatorError
        2450 not a device handle; 1202/1402 name not a single string; 1302 unknown name.
    """
    device = device_arg(dl_device, 1, DEVICE_PARAM)
    name = string_arg(gen_param_name, 2, "GenParamName", DEVICE_PARAM)
    if name not in DEVICE_PARAMS:
        raise wrong_value(2, f"GenParamName {name!r} is not one of {sorted(DEVICE_PARAMS)}",
                          DEVICE_PARAM)
    value = DEVICE_PARAMS[name](device)
    return list(value) if isinstance(value, list) else [value]


def optimize_dl_model_for_inference(handle: Any, dl_device: Any, precision: Any,
                                    dl_samples: Any, gen_param: Any = None
                                    ) -> tuple[Any, dict[str, Any]]:
    """Convert a model to another precision for ``dl_device`` (HALCON's operator).

    Parameters
    ----------
    handle : Model
        A classification model; it is not changed.
    dl_device : DLDevice
        From query_available_dl_devices; the converted model runs there.
    precision : {'float32', 'float16', 'int8'}
        'float32' copies, 'float16' casts the weights (float32 inputs and outputs kept),
        'int8' quantises statically (QDQ) calibrated on ``dl_samples``.
    dl_samples : dict, sequence of dict, or [] (not for 'int8')
        Preprocessed samples ('image'): the calibration data, and where the report measures
        the change of the outputs.
    gen_param : dict or empty
        get_dl_device_param(DLDevice, 'optimize_for_inference_params'), optionally changed:
        'calibration_method' ('minmax', 'entropy', 'percentile'), 'per_channel'
        ('false', 'true'); both for 'int8' only.

    Returns
    -------
    (Model, dict)
        The converted handle (the original's parameters, runtime and gpu set by the device)
        and the conversion report (:func:`dlheatmap.optimize.conversion_report`).

    Raises
    ------
    HOperatorError
        2450 bad model or device handle; 1203/1403/1303 Precision not a single known string;
        1204/1404 (no samples for 'int8')/7783/1304 bad samples; 1205/7911/7914 bad GenParam;
        7912 model not a classifier; 7801 a converted graph that cannot run.
    """
    model = model_handle(handle, OPTIMIZE)
    device = device_arg(dl_device, 2, OPTIMIZE)
    spec = operator_spec(OPTIMIZE).extra
    precision = string_arg(precision, 3, "Precision", OPTIMIZE)
    if precision not in spec["precisions"]:
        raise wrong_value(3, f"Precision {precision!r} is not one of {spec['precisions']}",
                          OPTIMIZE)
    classification_model(model, ErrorCode.UNSUPPORTED_MODEL, OPTIMIZE)
    params = model.params
    samples = [] if empty_tuple(dl_samples) and precision not in spec["calibrated"] \
        else as_sample_list(dl_samples, OPTIMIZE, 4)
    options = gen_options(_mapping_of(gen_param), OPTIMIZE, 5, precision)
    shape = (0, params.image_height, params.image_width, params.image_num_channels)
    images = images_from_samples(samples, params, OPTIMIZE, 4) if samples \
        else np.empty(shape, np.float32)
    with running_graph(OPTIMIZE):
        converted = convert_model(model, device, precision, images, options, OPTIMIZE)
        report = conversion_report(model, converted, device, precision, images, params)
    return converted, report


def _mapping_of(gen_param: Any) -> Any:
    """GenParam keys that do not apply to the precision are dropped when they hold the
    device's defaults, so the dict from get_dl_device_param passes for every precision."""
    if isinstance(gen_param, list) and len(gen_param) == 1:
        gen_param = gen_param[0]
    if not isinstance(gen_param, dict):
        return gen_param
    specs = operator_spec(OPTIMIZE).gen_params
    return {key: value for key, value in gen_param.items()
            if not (key in specs and value == specs[key].default)}
