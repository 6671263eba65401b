"""The onnxruntime engine: gradients as ONNX nodes appended to the model, one run per batch.

Where every op on the paths it needs has a gradient rule (:mod:`dlheatmap.graph.backward`),
the model extended with its backward passes returns the output, the classes explained and
whatever the request asks for: a layer's activation and gradients, the gradients with respect
to the image (plain or guided), or the Grad-CAM map and heatmap computed in the graph. One
forward pass, one backward chain per target; no torch is imported on this path.
"""

from __future__ import annotations

import numpy as np

from dlheatmap.engine.evidence import Evidence, Needs, Targets, top_classes
from dlheatmap.errors import HOperatorError
from dlheatmap.graph import backward
from dlheatmap.graph.backward import GradientRequest
from dlheatmap.model import Model
from dlheatmap.params import ModelParams
from dlheatmap.runtime.onnx_runtime import make_session

NAME = "onnxruntime"
#: the normalisations the graph's heatmap head computes (with eps 0)
HEAD_NORMALIZATIONS = tuple(backward.HEAD_DIVISORS)


def request_for(needs: Needs, targets: Targets, layer_tensor: str | None,
                score: str) -> GradientRequest:
    """The gradient model that serves ``needs``. A method content with the Grad-CAM map gets
    the graph's Grad-CAM head: only the map (and heatmap) leave onnxruntime."""
    maps_only = needs.grad_cam_map and not (
        needs.activations or needs.gradients or needs.input_gradients)
    return GradientRequest(layer=layer_tensor if needs.layer else None,
                           targets=targets.per_sample, score=score,
                           input_gradient=needs.input_gradients,
                           head="grad_cam" if maps_only else None)


def session(model: Model, request: GradientRequest, params: ModelParams):
    """(session, None) for the model extended as ``request`` asks, or (None, why not) where an
    op on the way has no gradient rule. Rules read sizes that follow the input size, so there
    is one session per request and input size."""
    device = model.device_for(params)

    def build():
        try:
            graph = backward.build_gradient_model(model.info, request,
                                                  model.tensor_shapes(params),
                                                  (params.image_height, params.image_width))
        except backward.UnsupportedGradientError as exc:
            return None, str(exc)
        try:  # no torch runs after it: onnxruntime's threads may spin as they like
            return make_session(graph, device, "gen_dl_model_heatmap"), None
        except HOperatorError as exc:  # an op onnxruntime lacks for this element type
            return None, f"onnxruntime cannot run the gradient model: {exc}"

    key = ("ort-gradients", request, model.input_dims(params), device)
    return model.cached(key, build)


def run_batch(model: Model, ort_session, request: GradientRequest, images: np.ndarray,
              start: int, targets: Targets, heatmap_mode: str | None) -> Evidence:
    """One onnxruntime run of the gradient model.

    The graph picks the top class with ArgMax over the model output; where that differs from
    :func:`top_classes` of the reported probabilities (confidences that tie once they are
    probabilities), the batch is run again for the classes the rule names.
    """
    image = model.info.image_input
    feed = {backward.IMAGE_INPUT: np.ascontiguousarray(images, dtype=image.dtype),
            backward.TARGETS_INPUT: _targets_input(targets, start, len(images))}
    wanted = [model.info.output_name, backward.TARGETS_OUTPUT, *_outputs(request, heatmap_mode)]
    if request.head == "grad_cam":
        feed[backward.SCALING_INPUT] = backward.scaling_input(heatmap_mode or "relu")
    output, chosen, *rest = ort_session.run(wanted, feed)
    probabilities = model.probabilities(output)
    if targets.indices is None:
        top = top_classes(probabilities)
        if not np.array_equal(top, chosen[:, 0]):
            feed[backward.TARGETS_INPUT] = top[:, None].astype(np.int64)
            output, chosen, *rest = ort_session.run(wanted, feed)
    evidence = Evidence(probabilities, chosen)
    for name, value in zip(wanted[2:], rest, strict=True):
        _store(evidence, request, name, value)
    return evidence


def _targets_input(targets: Targets, start: int, count: int) -> np.ndarray:
    if targets.indices is None:
        return np.full((count, 1), -1, np.int64)
    return targets.rows(start, count, fill=-1)


def _outputs(request: GradientRequest, heatmap_mode: str | None) -> list[str]:
    """What to fetch: onnxruntime runs only the nodes these outputs need."""
    if request.head == "grad_cam":
        return [backward.MAPS_OUTPUT, *([backward.HEATMAPS_OUTPUT] if heatmap_mode else [])]
    names = []
    if request.layer is not None:
        names += [request.layer, backward.LAYER_GRADIENTS_OUTPUT]
    if request.input_gradient is not None:
        names.append(backward.INPUT_GRADIENTS_OUTPUT)
    return names


def _store(evidence: Evidence, request: GradientRequest, name: str, value: np.ndarray) -> None:
    if name == request.layer:
        evidence.activations = value
    elif name == backward.LAYER_GRADIENTS_OUTPUT:
        evidence.gradients = value
    elif name == backward.INPUT_GRADIENTS_OUTPUT:
        evidence.input_gradients = value
    elif name == backward.MAPS_OUTPUT:  # [T, N, h, w] -> [N, T, h, w]
        evidence.cam_maps = value.transpose(1, 0, 2, 3)
    elif name == backward.HEATMAPS_OUTPUT:
        evidence.heatmaps = value.transpose(1, 0, 2, 3)
