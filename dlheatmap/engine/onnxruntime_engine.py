"""The onnxruntime engine: gradients as ONNX nodes appended to the model, one run per batch.

Where every op after the layer has a gradient rule (:mod:`dlheatmap.graph.backward`), the
model extended with the backward pass returns the output, the activation and its gradient, or
the Grad-CAM map and heatmap computed in the graph, at little more than an inference's cost.
No torch is imported on this path.
"""

from __future__ import annotations

import numpy as np

from dlheatmap.engine.evidence import Evidence, Needs, Targets, top_classes
from dlheatmap.errors import HOperatorError
from dlheatmap.graph import backward
from dlheatmap.model import Model
from dlheatmap.params import ModelParams
from dlheatmap.runtime.onnx_runtime import make_session

NAME = "onnxruntime"
#: the normalisations the graph's heatmap head computes (with eps 0)
HEAD_NORMALIZATIONS = tuple(backward.HEAD_DIVISORS)


def why_not(needs: Needs, targets: Targets, score: str) -> str | None:
    """Why this engine cannot serve a request, or None if it may (the graph decides the rest)."""
    if needs.input_gradients is not None:
        return "gradients with respect to the image run in torch"
    if targets.per_sample != 1:
        return "several classes per sample run in torch"
    if score != "logit":
        return "the probability as the score runs in torch"
    return None


def session(model: Model, layer_tensor: str, params: ModelParams):
    """The model with Grad-CAM's backward pass appended, as an onnxruntime session; None
    where an op after the layer has no gradient rule. Rules read sizes that follow the input
    size, so there is one session per input size."""
    device = model.device_for(params)

    def build():
        graph = backward.gradient_model(model.info, layer_tensor, model.tensor_shapes(params),
                                        (params.image_height, params.image_width))
        if graph is None:
            return None
        try:  # no torch runs after it: onnxruntime's threads may spin as they like
            return make_session(graph, device, "gen_dl_model_heatmap")
        except HOperatorError:  # an op onnxruntime lacks for this element type: use torch
            return None

    key = ("ort-grad-cam", layer_tensor, model.input_dims(params), device)
    return model.cached(key, build)


def run_batch(model: Model, ort_session, images: np.ndarray, start: int, targets: Targets,
              layer_tensor: str, needs: Needs, heatmap_mode: str | None) -> Evidence:
    """One onnxruntime run of the gradient model.

    With ``needs.grad_cam_map`` (and no need for the activation or its gradient) only the
    Grad-CAM map leaves onnxruntime, and the heatmap normalised by ``heatmap_mode`` if given.
    The graph picks the top class with ArgMax over the model output; where that differs from
    :func:`top_classes` of the reported probabilities (confidences that tie once they are
    probabilities), the batch is run again for the classes the rule names.
    """
    maps_only = needs.grad_cam_map and not (needs.activations or needs.gradients)
    feed = {backward.IMAGE_INPUT: np.ascontiguousarray(images, dtype=np.float32),
            backward.TARGET_INPUT: targets.rows(start, len(images), fill=-1)[:, 0]
            if targets.indices is not None else np.full(len(images), -1, np.int64),
            backward.SCALING_INPUT: backward.scaling_input(heatmap_mode or "relu")}
    wanted = [model.info.output_name, backward.CHOSEN_OUTPUT]
    if maps_only:  # onnxruntime runs only the nodes the requested outputs need
        wanted += [backward.CAM_OUTPUT, *([backward.HEATMAP_OUTPUT] if heatmap_mode else [])]
    else:
        wanted += [layer_tensor, backward.GRADIENT_OUTPUT]
    output, chosen, *rest = ort_session.run(wanted, feed)
    probabilities = model.probabilities(output)
    if targets.indices is None:
        top = top_classes(probabilities)
        if not np.array_equal(top, chosen):
            feed[backward.TARGET_INPUT] = top.astype(np.int64)
            output, chosen, *rest = ort_session.run(wanted, feed)
    if maps_only:
        cam, *heat = rest
        return Evidence(probabilities, chosen[:, None], cam_maps=cam[:, None],
                        heatmaps=heat[0] if heat else None)
    activation, gradient = rest
    return Evidence(probabilities, chosen[:, None], activations=activation,
                    gradients=gradient[None])
