"""gen_dl_model_classification_heatmap: HALCON's confidence-based heatmap procedure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dlheatmap.errors import ErrorCode, HOperatorError, wrong_count
from dlheatmap.occlusion import occlusion
from dlheatmap.operators._args import (
    check_outputs,
    classification_model,
    gen_options,
    is_integer,
    model_handle,
    one_or_many,
    running_graph,
)
from dlheatmap.params import ModelParams, short_repr
from dlheatmap.results import confidence_based_dict
from dlheatmap.samples import as_sample_list, images_from_samples
from dlheatmap.spec import operator_spec

OPERATOR = "gen_dl_model_classification_heatmap"
TOP_CLASS_KEY = "classification_class_ids"


def gen_dl_model_classification_heatmap(handle: Any, dlsample: Any, dlresult: Any,
                                        gen_param: Any = None) -> None:
    """Add the confidence-based heatmap to each result (HALCON's procedure of that name).

    Parameters
    ----------
    handle : Model
        A classification model from :func:`read_dl_model`.
    dlsample : dict or sequence of dict
        Each with 'image' (image_height x image_width (x channels), real).
    dlresult : dict or sequence of dict
        One per sample: its apply_dl_model result, which receives the heatmap.
    gen_param : dict, None or empty sequence
        'target_class_id' (a class ID; [] : the result's classification_class_ids[0]),
        'feature_size' (the square's side in pixels, default 30), 'sampling_size' (its step,
        default 10).

    Each result gains 'heatmap_confidence_based' -> {'heatmap_image_class_<ID>': float32
    H x W in [0, 1], 'classification_heatmap_maxdeviation': float}; the algorithm is in
    :mod:`dlheatmap.occlusion`.

    Raises
    ------
    HOperatorError
        2450 bad handle; 1202/1402/7783/1302 bad samples; 1203 a result that is not a dict,
        1403 not one result per sample; 7851 model not a classifier; 1204 GenParam not a
        dict, 7911 an unknown key, 7914 a bad value; 7853 a class ID the model does not have;
        2894 target_class_id [] and a result without 'classification_class_ids'; 7801 a graph
        that fails to run. Nothing is added to any result after an error.
    """
    model = model_handle(handle, OPERATOR)
    params = model.params
    samples = as_sample_list(dlsample, OPERATOR, 2)
    results = one_or_many(dlresult, Mapping, 3, "DLResult", OPERATOR)
    if len(results) != len(samples):
        raise wrong_count(3, f"DLResult: {len(results)} results for {len(samples)} samples",
                          OPERATOR)
    classification_model(model, ErrorCode.UNSUPPORTED_MODEL_TYPE, OPERATOR)
    options = gen_options(gen_param, OPERATOR, 4, operator_spec(OPERATOR).extra["method"])
    class_ids = _target_ids(options["target_class_id"], results, params)
    images = images_from_samples(samples, params, OPERATOR, 2)
    targets = np.array([params.class_ids.index(class_id) for class_id in class_ids])
    with running_graph(OPERATOR):
        found = occlusion(model, images, targets, options["feature_size"],
                          options["sampling_size"], params)
    check_outputs(model, params, OPERATOR, found.probabilities, found.deviations)
    for result, class_id, heatmap, deviation in zip(
            results, class_ids, found.heatmaps, found.max_deviation, strict=True):
        result.update(confidence_based_dict(class_id, heatmap, deviation))


def _target_ids(target: Any, results: list[Mapping], params: ModelParams) -> list[int]:
    """The class ID each result is explained for (7853 for an ID the model lacks, 2894 for a
    result without its top class)."""
    if target == []:
        for index, result in enumerate(results):
            if not result.get(TOP_CLASS_KEY):
                raise HOperatorError(ErrorCode.DICT_KEY_MISSING, f"DLResult {index}: no key "
                                     f"{TOP_CLASS_KEY!r} (the apply_dl_model result of the "
                                     "sample) to take the top class from", OPERATOR)
        ids = [result[TOP_CLASS_KEY][0] for result in results]
    else:
        ids = [target] * len(results)
    for class_id in ids:
        if not is_integer(class_id) or int(class_id) not in params.class_ids:
            raise HOperatorError(ErrorCode.WRONG_TARGET_CLASS, f"target_class_id: class ID "
                                 f"{short_repr(class_id)} is not in the model's class_ids",
                                 OPERATOR)
    return [int(class_id) for class_id in ids]
