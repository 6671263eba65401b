"""The heatmap methods a job offers, each as a runner in gen_dl_model_heatmap's result format.

HALCON's methods run through :func:`dlheatmap.gen_dl_model_heatmap`, the others through
:func:`dlheatmap.explain`; adding a method is one entry in :data:`METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlheatmap.arguments import one_class_or_none
from dlheatmap.errors import ErrorCode, HOperatorError
from dlheatmap.methods import METHODS as ALL_METHODS
from dlheatmap.results import heatmap_dict
from dlheatmap.spec import operator_spec

Runner = Callable[[Any, list[dict], Any, dict], list[dict]]


@dataclass(frozen=True)
class Method:
    """A heatmap method a job (and the command) offers.

    ``run(model, samples, target_classes, gen_param)`` returns one result dict per sample in
    gen_dl_model_heatmap's format: classification results plus one ``'heatmap_*'`` key holding
    ``{'<...>_class_<ID>': heatmap}``. ``kind`` says how to draw the heatmap: 'map' (H x W in
    [0, 1], blended over the image) or 'image' (image-shaped, signed, shown alone).
    """

    name: str
    kind: str
    run: Runner
    help: str


def _halcon_method(name: str) -> Runner:
    def run(model, samples, target_classes, gen_param):
        from dlheatmap.operators import gen_dl_model_heatmap

        return gen_dl_model_heatmap(model, samples, name, target_classes, gen_param)

    return run


def _explain_method(name: str) -> Runner:
    """A method of :func:`dlheatmap.explain` in gen_dl_model_heatmap's result format.

    'target_conv_layer' is explain's ``layer``: a Conv or the Relu after it for layer
    methods, refused by explain (1305) for input-gradient methods, which take none. Every
    other GenParam ('use_conv_only', 'scaling' belong to HALCON's grad_cam) is refused (7911).
    """
    def run(model, samples, target_classes, gen_param):
        from dlheatmap.explain import explain
        from dlheatmap.operators._args import sorted_results

        unsupported = sorted(set(gen_param) - {"target_conv_layer"})
        if unsupported:
            raise HOperatorError(ErrorCode.UNSUPPORTED_GENPARAM, f"{unsupported}: the methods "
                                 "of dlheatmap.explain take only target_conv_layer",
                                 "dlheatmap")
        layer = gen_param.get("target_conv_layer")
        targets = _one_class_for_all(target_classes)
        # 4-D even for grey samples (H x W), which a 3-D stack would make ambiguous
        images = np.stack([np.atleast_3d(sample["image"]) for sample in samples])
        explained = explain(model, images, name, targets, layer or None)
        results = sorted_results(explained.probabilities, model.params)
        for result, heatmaps, class_ids in zip(
                results, explained.heatmaps, explained.class_ids, strict=True):
            result.update(heatmap_dict(name, int(class_ids[0]), heatmaps[0]))
        return results

    return run


def _one_class_for_all(target_classes: Any) -> int | None:
    """gen_dl_model_heatmap's TargetClasses (none, or one class ID for every sample) as
    explain's targets. A bare int, not [ID]: explain reads a sequence as one ID per image."""
    return one_class_or_none(target_classes, 4, "dlheatmap")


def _help(name: str) -> str:
    """A method's --help entry, from the methods' registry."""
    method = ALL_METHODS[name]
    shown = "shown alone" if method.kind == "image" else "blended over the image"
    return f"{method.title}, {shown}"


def _runner(name: str) -> Runner:
    return _halcon_method(name) if name in HALCON_METHODS else _explain_method(name)


HALCON_METHODS = tuple(operator_spec("gen_dl_model_heatmap").extra["methods"])

# HALCON's own methods first, then the rest of the registry in its order
METHODS: dict[str, Method] = {
    name: Method(name, ALL_METHODS[name].kind, _runner(name), _help(name))
    for name in (*HALCON_METHODS, *(n for n in ALL_METHODS if n not in HALCON_METHODS))
}
