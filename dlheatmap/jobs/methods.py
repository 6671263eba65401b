"""The heatmap methods a job offers, each as a runner in gen_dl_model_heatmap's result format.

HALCON's methods run through :func:`dlheatmap.gen_dl_model_heatmap`, the others through
:func:`dlheatmap.explain`; adding a method is one entry in :data:`METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlheatmap.errors import ErrorCode, HOperatorError, wrong_count
from dlheatmap.results import heatmap_dict

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
    if target_classes is None:
        return None
    values = np.atleast_1d(target_classes).tolist()
    if len(values) > 1:
        raise wrong_count(4, f"TargetClasses takes one class ID or none, got {len(values)}",
                          "dlheatmap")
    return int(values[0]) if values else None


# The methods beyond HALCON in the order --help lists them: Grad-CAM's gradient-weighted
# relatives first, then the CAMs without gradients, then the pixel-level input gradients.
_EXPLAIN_HELP = {
    "grad_cam_plus_plus": "Grad-CAM++",
    "xgrad_cam": "XGrad-CAM",
    "layer_cam": "LayerCAM",
    "hires_cam": "HiResCAM",
    "score_cam": "Score-CAM, forward passes only",
    "eigen_cam": "Eigen-CAM, class-agnostic",
    "saliency": "gradient saliency of Simonyan et al.",
    "guided_backprop": "guided backpropagation, shown alone",
}


def _explain_methods() -> list[Method]:
    from dlheatmap.methods import METHODS as ALL_METHODS

    # methods registered later and not listed above come last, under their titles
    names = [*_EXPLAIN_HELP, *(name for name in ALL_METHODS if name not in _EXPLAIN_HELP)]
    return [
        Method(name, ALL_METHODS[name].kind, _explain_method(name),
               _EXPLAIN_HELP.get(name, ALL_METHODS[name].title))
        for name in names
        if name not in HALCON_METHODS  # HALCON's own, above
    ]


HALCON_METHODS = ("grad_cam", "guided_grad_cam")

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("grad_cam", "map", _halcon_method("grad_cam"),
               "Grad-CAM, blended over the image"),
        Method("guided_grad_cam", "image", _halcon_method("guided_grad_cam"),
               "Guided Grad-CAM, shown alone"),
        *_explain_methods(),
    )
}
