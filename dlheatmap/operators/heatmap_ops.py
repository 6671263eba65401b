"""gen_dl_model_heatmap and gen_dl_model_heatmap_s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dlheatmap import heatmap as core
from dlheatmap.arguments import class_indices, one_class_or_none
from dlheatmap.errors import ErrorCode, HOperatorError, wrong_count, wrong_type
from dlheatmap.model import Model
from dlheatmap.operators._args import (
    check_outputs,
    classification_model,
    model_handle,
    running_graph,
    sorted_results,
    string_arg,
)
from dlheatmap.params import ModelParams
from dlheatmap.results import heatmap_dict
from dlheatmap.samples import as_sample_list, images_from_samples
from dlheatmap.spec import operator_spec
from dlheatmap.values import empty_tuple

OPERATOR = "gen_dl_model_heatmap"


def gen_dl_model_heatmap(
    handle: Model,
    samples: Any,
    heatmap_method: str = "grad_cam",
    target_classes: Any = None,
    gen_param: Any = None,
) -> list[dict]:
    """Infer samples and generate a heatmap for each (HALCON's gen_dl_model_heatmap).

    Parameters
    ----------
    handle : Model
        A classification model from :func:`read_dl_model`.
    samples : dict or sequence of dict
        Each with 'image': float array of image_height x image_width (x channels).
    heatmap_method : {'grad_cam', 'guided_grad_cam'}
    target_classes : int, one-element sequence, or None / [] / ()
        The class ID to explain for every sample; empty means each sample's top class.
    gen_param : dict, None or empty sequence
        'target_conv_layer' (a Conv node name from 'summary'; default the deepest convolution
        with an output larger than 1 x 1), 'use_conv_only' ('true' or 'false', grad_cam only),
        'scaling' ('scale_after_relu', 'scale_before_relu', 'none'; grad_cam only).

    Returns
    -------
    list of dict
        One per sample, in order: the apply_dl_model results plus 'heatmap_grad_cam' ->
        {'heatmap_image_class_<ID>': float32 H x W in [0, 1]} or 'heatmap_guided_grad_cam' ->
        {'guided_grad_cam_image_class_<ID>': float32 image shaped like the sample image}.

    Raises
    ------
    HOperatorError
        2450 bad handle; 1202/1402/7783/1302 bad samples (1302 also for images whose model
        output overflows); 1203/1403/7852 bad method; 7851 model not a classifier;
        1204/1404/7853 bad target class; 1205/7911/7914 bad GenParam; 7912 no convolution
        with an output larger than 1 x 1; 7801 a graph that cannot be converted to torch, fails
        to run, returns another number of classes than it declares or non-finite results for
        any image. The handle's parameters and the arguments are unchanged after an error.
    """
    model = model_handle(handle, OPERATOR)
    params = model.params
    sample_list = as_sample_list(samples, OPERATOR, 2)
    method = _method(heatmap_method)
    classification_model(model, ErrorCode.UNSUPPORTED_MODEL_TYPE, OPERATOR)
    target_index = _target_index(target_classes, params)
    options = _gen_params(gen_param, method)
    layer = core.resolve_layer(model, options["target_conv_layer"], params, OPERATOR)
    images = images_from_samples(sample_list, params, OPERATOR, 2)

    choose = core.top_class if target_index is None else core.fixed_class(target_index)
    with running_graph(OPERATOR):
        if method == "grad_cam":
            result = core.grad_cam(model, images, choose, layer,
                                   options["use_conv_only"] == "true", options["scaling"], params)
        else:
            result = core.guided_grad_cam(model, images, choose, layer, params)
    # A Grad-CAM heatmap is the map resized (convex blends) and divided by a positive number
    # or 1: it is finite wherever the small layer-resolution map is, so that one is checked.
    checked = result.layer_maps if method == "grad_cam" else result.heatmaps
    check_outputs(model, params, OPERATOR, result.probabilities, checked)
    return _results(result, sample_list, params, method)


def gen_dl_model_heatmap_s(
    handle: Model,
    sample: Any,
    heatmap_method: str = "grad_cam",
    target_classes: Any = None,
    gen_param: Any = None,
) -> dict:
    """gen_dl_model_heatmap for a single sample; returns its result dict.

    Raises HOperatorError 1402 for anything but exactly one sample, else as
    :func:`gen_dl_model_heatmap`.
    """
    model_handle(handle, OPERATOR + "_s")
    count = len(as_sample_list(sample, OPERATOR + "_s", 2))
    if count != 1:  # refused before any computation
        raise wrong_count(2, f"DLSample: expected one sample, got {count}", OPERATOR + "_s")
    (result,) = gen_dl_model_heatmap(handle, sample, heatmap_method, target_classes, gen_param)
    return result


def _method(value: Any) -> str:
    method = string_arg(value, 3, "HeatmapMethod", OPERATOR)
    methods = operator_spec(OPERATOR).extra["methods"]
    if method not in methods:
        raise HOperatorError(ErrorCode.UNSUPPORTED_METHOD,
                             f"HeatmapMethod {method!r} is not one of {methods}", OPERATOR)
    return method


def _target_index(value: Any, params: ModelParams) -> int | None:
    """The class index to explain, or None for each sample's top class."""
    class_id = one_class_or_none(value, 4, OPERATOR)
    if class_id is None:
        return None
    return int(class_indices(np.array([class_id]), params, "TargetClasses", OPERATOR)[0])


def _gen_params(value: Any, method: str) -> dict[str, Any]:
    """GenParam with defaults filled in, checked against the spec."""
    specs = operator_spec(OPERATOR).gen_params
    if empty_tuple(value):
        value = {}
    if not isinstance(value, Mapping):
        raise wrong_type(5, f"GenParam must be a dict, got {type(value).__name__}", OPERATOR)
    options = {name: spec.default for name, spec in specs.items()}
    # Keys first (7911), then values (7914), so the code does not depend on the dict's order.
    for key in value:
        spec = specs.get(key)
        if spec is None:
            raise HOperatorError(ErrorCode.UNSUPPORTED_GENPARAM, f"unknown GenParam key {key!r}; "
                                 f"known: {sorted(specs)}", OPERATOR)
        if method not in spec.methods:
            raise HOperatorError(ErrorCode.UNSUPPORTED_GENPARAM,
                                 f"GenParam {key!r} applies to {list(spec.methods)} only", OPERATOR)
    for key, item in value.items():
        options[key] = _gen_value(specs[key], item)
    return options


def _gen_value(spec, item: Any) -> Any:
    if isinstance(item, (list, tuple)) and len(item) == 1:
        item = item[0]
    if isinstance(item, (list, tuple)):
        raise HOperatorError(ErrorCode.UNSUPPORTED_GENVALUE,
                             f"GenParam {spec.name!r} takes a single "
                             f"value, got {len(item)}: {item!r}", OPERATOR)
    if spec.name == "use_conv_only" and isinstance(item, (bool, np.bool_)):
        item = "true" if item else "false"  # Python callers may pass booleans
    if not isinstance(item, str):
        raise HOperatorError(ErrorCode.UNSUPPORTED_GENVALUE,
                             f"GenParam {spec.name!r} takes a string, "
                             f"got {item!r}", OPERATOR)
    if spec.values is not None and item not in spec.values:
        raise HOperatorError(ErrorCode.UNSUPPORTED_GENVALUE,
                             f"GenParam {spec.name!r}: {item!r} is not "
                             f"one of {list(spec.values)}", OPERATOR)
    return str(item)


def _results(result: core.HeatmapResult, samples: list[Mapping], params: ModelParams,
             method: str) -> list[dict]:
    results = sorted_results(result.probabilities, params)
    for index, (entry, sample) in enumerate(zip(results, samples, strict=True)):
        class_id = params.class_ids[int(result.targets[index])]
        image = result.heatmaps[index]
        if method == "guided_grad_cam" and np.ndim(sample["image"]) == 2:
            image = image[..., 0]
        entry.update(heatmap_dict(method, class_id, np.ascontiguousarray(image, np.float32)))
    return results
