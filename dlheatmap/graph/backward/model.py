"""The gradient model: a classifier extended with the backward passes a request asks for.

One onnxruntime run of the gradient model returns the model's output, the classes explained
and, as requested, a layer's activation and gradients, the gradients with respect to the
image (plain or guided) and finished Grad-CAM or Guided Grad-CAM heatmaps: one forward pass,
one backward chain per target and kind, no weight gradients.

Inputs
------
:data:`IMAGE_INPUT`
    float32 [N, H, W, C]: the images in HALCON's layout, whatever the model's (its own layout
    is a Transpose inside the graph).
:data:`TARGETS_INPUT`
    int64 [N, T]: the class index of each sample's T targets; -1 for the sample's top class
    (ArgMax of the model output, the first index on ties).
:data:`SCALING_INPUT`
    float32 [3], only with ``head='grad_cam'``: the normalisation as :func:`scaling_input`
    gives it.

Outputs (besides the model's own output, unchanged)
-------
:data:`TARGETS_OUTPUT`
    int64 [N, T]: the class indices explained (the -1 entries resolved).
:data:`PROBABILITIES_OUTPUT`
    [N, K]: softmax of the score tensor (the logits before a final Softmax).
``request.layer``
    The layer's activation, under the layer tensor's own name ([N, C, h, w] for a conv).
:data:`LAYER_GRADIENTS_OUTPUT`
    [T, N, *layer shape]: d score / d layer per target (plain, never guided).
:data:`INPUT_GRADIENTS_OUTPUT`
    [T, N, H, W, C]: d score / d image per target in HALCON's layout (plain or guided).
:data:`MAPS_OUTPUT`
    [T, N, h, w]: the Grad-CAM map at the layer's resolution, before any ReLU.
:data:`HEATMAPS_OUTPUT`
    'grad_cam': [T, N, H, W], the map resized to ``image_size`` and scaled;
    'guided_grad_cam': [T, N, H, W, C], the guided input gradient times the resized map with
    negatives set to 0, not rescaled.

Files below opset :data:`GRADIENT_OPSET` are first converted to it with ONNX's version
converter (spec/decisions.md), so that every appended node can use that opset's forms
(ScatterElements with reduction 'add', axes as inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper, version_converter

from dlheatmap.graph.analysis import GraphInfo, analyse, infer_shapes
from dlheatmap.graph.backward import head as heads
from dlheatmap.graph.backward import rules  # noqa: F401 (imported to register the rules)
from dlheatmap.graph.backward.builder import STEM, GradientBuilder, UnsupportedGradientError
from dlheatmap.graph.backward.driver import backward
from dlheatmap.graph.loading import normalise

IMAGE_INPUT = "dlheatmap_image"
TARGETS_INPUT = "dlheatmap_targets"
SCALING_INPUT = "dlheatmap_scaling"
TARGETS_OUTPUT = "dlheatmap_chosen"
PROBABILITIES_OUTPUT = "dlheatmap_probabilities"
LAYER_GRADIENTS_OUTPUT = "dlheatmap_layer_gradients"
INPUT_GRADIENTS_OUTPUT = "dlheatmap_input_gradients"
MAPS_OUTPUT = "dlheatmap_maps"
HEATMAPS_OUTPUT = "dlheatmap_heatmaps"

GRADIENT_OPSET = 16  # ScatterElements' reduction 'add' (max pooling with overlapping windows)

SCORES = ("logit", "probability")
INPUT_GRADIENTS = (None, "plain", "guided")
HEADS = (None, "grad_cam", "guided_grad_cam")
_FLOATS = {np.dtype(np.float32), np.dtype(np.float64)}


@dataclass(frozen=True)
class GradientRequest:
    """What a gradient model computes.

    Attributes
    ----------
    layer : str or None
        A tensor (a layer's output) whose activation and d score / d layer are returned.
    targets : int
        T, the classes explained per sample: one seed and one backward chain each, all in the
        same run.
    score : {'logit', 'probability'}
        What is differentiated: the score tensor (logit before a final Softmax) or its softmax.
    input_gradient : {None, 'plain', 'guided'}
        The gradient with respect to the image, plain or by guided backpropagation (ReLU and
        Clip(0, x) pass only positive gradients).
    head : {None, 'grad_cam', 'guided_grad_cam'}
        HALCON's heatmaps computed in the graph (needs ``layer``). 'guided_grad_cam' takes the
        plain gradient at the layer and the guided gradient at the image from one forward pass.
    """

    layer: str | None = None
    targets: int = 1
    score: str = "logit"
    input_gradient: str | None = None
    head: str | None = None

    def __post_init__(self) -> None:
        if self.score not in SCORES or self.input_gradient not in INPUT_GRADIENTS or (
                self.head not in HEADS):
            raise ValueError(f"invalid gradient request {self}")
        if not isinstance(self.targets, int) or self.targets < 1:
            raise ValueError(f"targets must be a positive int, got {self.targets!r}")
        if self.head is not None and self.layer is None:
            raise ValueError(f"head {self.head!r} needs a layer")
        if self.head == "guided_grad_cam" and self.input_gradient == "plain":
            raise ValueError("guided_grad_cam uses the guided input gradient")

    @property
    def image_gradient(self) -> str | None:
        """The input gradient the graph computes: requested, or needed by the head."""
        return "guided" if self.head == "guided_grad_cam" else self.input_gradient


def gradient_model(
    info: GraphInfo, request: GradientRequest, shapes: dict[str, tuple],
    image_size: tuple[int, int],
) -> onnx.ModelProto | None:
    """``info``'s model extended as ``request`` asks (module docstring: inputs and outputs);
    ``shapes``: the tensors' shapes for one image, ``image_size``: (height, width) of the
    heatmaps. Returns None where an op on a path has no gradient rule, or the model's opset,
    element type or output are not covered; the caller then differentiates in torch.
    """
    try:
        return build_gradient_model(info, request, shapes, image_size)
    except UnsupportedGradientError:
        return None


def build_gradient_model(info: GraphInfo, request: GradientRequest, shapes: dict[str, tuple],
                         image_size: tuple[int, int], flip_stride_one: bool = True
                         ) -> onnx.ModelProto:
    """:func:`gradient_model`, raising UnsupportedGradientError (with the reason) instead of
    returning None. ``flip_stride_one``: see :class:`GradientBuilder`."""
    info, shapes = _at_gradient_opset(info, shapes)
    b = _builder(info, request, shapes)
    b.flip_stride_one = flip_stride_one
    chosen = _chosen(b)
    probabilities = b.add("Softmax", [_flat(b, info.score_tensor)], axis=1)
    outputs = {TARGETS_OUTPUT: chosen, PROBABILITIES_OUTPUT: probabilities}
    per_target: dict[str, list[str]] = {}
    for target in range(request.targets):  # one seed and one chain per target
        column = b.add("Gather", [chosen, b.ints(target)], axis=1)
        seed = _seed(b, column, request.score, probabilities)
        for name, tensor in _one_target(b, request, seed, image_size).items():
            per_target.setdefault(name, []).append(tensor)
    for name, tensors in per_target.items():
        outputs[name] = _stack(b, tensors)
    if request.layer is not None:
        outputs[request.layer] = request.layer
    return _assemble(b, request, outputs)


def _builder(info: GraphInfo, request: GradientRequest, shapes) -> GradientBuilder:
    image = info.image_input
    if info.score_tensor is None or not info.num_classes or image is None:
        raise UnsupportedGradientError("the model is not a classifier with one score tensor")
    if image.dtype not in _FLOATS:
        raise UnsupportedGradientError(f"images of type {image.dtype}")
    layer_type = info.value_types.get(request.layer) if request.layer else None
    if layer_type is not None and layer_type.tensor_type.elem_type not in (
            TensorProto.FLOAT, TensorProto.DOUBLE):
        raise UnsupportedGradientError("the layer's output is not a float tensor")
    b = GradientBuilder(info, shapes, _opset(info.model), image.dtype.type)
    if request.head is not None and len(b.shape(request.layer)) != 4:
        raise UnsupportedGradientError("the layer's output is not N x C x h x w")
    return b


def _one_target(b: GradientBuilder, request: GradientRequest, seed: str,
                size: tuple[int, int]) -> dict[str, str]:
    """The requested tensors for one target: name -> tensor (batch N)."""
    found = {}
    if request.layer is not None:
        found[LAYER_GRADIENTS_OUTPUT] = backward(b, seed, request.layer)
    kind = request.image_gradient
    if kind is not None:
        image = b.info.image_input
        grad = backward(b, seed, image.name, guided=kind == "guided")
        found[INPUT_GRADIENTS_OUTPUT] = b.transpose(grad, [0, 2, 3, 1]) if (
            image.layout == "NCHW") else grad
    if request.head is not None:
        maps = heads.grad_cam_map(b, request.layer, found[LAYER_GRADIENTS_OUTPUT])
        found[MAPS_OUTPUT] = b.squeeze(maps, [1])
        resized = heads.resize(b, maps, size)
        if request.head == "grad_cam":
            found[HEATMAPS_OUTPUT] = b.squeeze(heads.scaled(b, resized, SCALING_INPUT), [1])
        else:
            found[HEATMAPS_OUTPUT] = heads.guided_product(b, found[INPUT_GRADIENTS_OUTPUT],
                                                          resized, size)
    return found


def _chosen(b: GradientBuilder) -> str:
    """int64 [N, T]: the targets with -1 replaced by the top class."""
    top = b.add("ArgMax", [_flat(b, b.info.output_name)], axis=1, keepdims=1)
    return b.add("Where", [b.add("Less", [TARGETS_INPUT, b.ints(0)]), top, TARGETS_INPUT])


def _flat(b: GradientBuilder, tensor: str) -> str:
    """A [N, classes] view of a [N, classes] or [N, classes, 1, 1] tensor."""
    return tensor if len(b.shape(tensor)) == 2 else b.add("Flatten", [tensor], axis=1)


def _seed(b: GradientBuilder, chosen: str, score: str, probabilities: str) -> str:
    """d score / d score tensor for the classes ``chosen`` [N], shaped like the score tensor.

    The logit's seed is one-hot rows, written only if a rule reads them: through a
    classifier's dense layer, the gradient of one class score is that class's weight row (a
    Gather of the chosen classes). The probability's seed is p_c (onehot_c - p).
    """
    info = b.info
    seed = b.fresh("seed")

    def one_hot() -> str:
        return b.add("OneHot", [chosen, b.ints([info.num_classes]), b.constant([0.0, 1.0])],
                     axis=-1)

    def shaped(rows: str) -> str:
        return rows if len(b.shape(info.score_tensor)) == 2 else b.like(rows, info.score_tensor)

    if score == "probability":
        own = b.add("GatherElements", [probabilities, b.unsqueeze(chosen, [1])], axis=1)
        rows = b.add("Mul", [own, b.add("Sub", [one_hot(), probabilities])])
        return shaped(rows)
    b.pending[seed] = lambda: b.add("Identity", [shaped(one_hot())], name=seed)
    b.seeds[seed] = chosen
    return seed


def _stack(b: GradientBuilder, tensors: list[str]) -> str:
    parts = [b.unsqueeze(tensor, [0]) for tensor in tensors]
    return parts[0] if len(parts) == 1 else b.add("Concat", parts, axis=0)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _at_gradient_opset(info: GraphInfo, shapes: dict) -> tuple[GraphInfo, dict]:
    """``info`` and ``shapes`` for the model converted to :data:`GRADIENT_OPSET` where it is
    older (ONNX's version converter, then dlheatmap's normalisation: the converter writes
    Constant nodes); unchanged otherwise."""
    if _opset(info.model) >= GRADIENT_OPSET:
        return info, shapes
    try:
        converted = normalise(version_converter.convert_version(info.model, GRADIENT_OPSET))
    except Exception as exc:  # the converter raises several types; the reason is reported
        raise UnsupportedGradientError(f"opset {_opset(info.model)} could not be converted to "
                                       f"{GRADIENT_OPSET}: {exc}") from exc
    new_info = analyse(converted)
    # the converter may put a shape-only op before a final Softmax: the score tensor is then
    # that op's output, the same logits
    if (new_info.image_input != info.image_input or new_info.output_kind != info.output_kind
            or new_info.score_tensor is None):
        raise UnsupportedGradientError("the converted model differs in its input or output")
    dims = shapes.get(info.image_input.name)
    merged = dict(infer_shapes(converted, tuple(dims))) if dims else {}
    merged.update(shapes)
    return new_info, merged


def _assemble(b: GradientBuilder, request: GradientRequest, outputs: dict[str, str]):
    info = b.info
    model = onnx.ModelProto()
    model.CopyFrom(info.model)
    graph = model.graph
    batch = _halcon_layout_input(graph, info, b.elem_type)
    graph.input.append(helper.make_tensor_value_info(TARGETS_INPUT, TensorProto.INT64,
                                                     [batch, request.targets]))
    if request.head == "grad_cam":
        graph.input.append(helper.make_tensor_value_info(SCALING_INPUT, b.elem_type, [3]))
    for node in graph.node:
        for position, tensor in b.extra_outputs.get(node.name, {}).items():
            while len(node.output) <= position:
                node.output.append("")
            node.output[position] = tensor
    for name, tensor in outputs.items():
        if tensor != name:
            b.add("Identity", [tensor], name=name)
    graph.node.extend(b.nodes)
    graph.initializer.extend(b.initializers)
    for name in outputs:
        graph.output.append(helper.make_empty_tensor_value_info(name))
    return model


def _halcon_layout_input(graph: onnx.GraphProto, info: GraphInfo, elem_type: int) -> int | str:
    """Replace the image input by :data:`IMAGE_INPUT` in HALCON's layout; returns its batch
    dimension."""
    image = info.image_input
    old = next(value for value in graph.input if value.name == image.name)
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0
            else (d.dim_param or f"d{i}") for i, d in enumerate(old.type.tensor_type.shape.dim)]
    if image.layout == "NCHW":
        dims = [dims[0], dims[2], dims[3], dims[1]]
        bridge = helper.make_node("Transpose", [IMAGE_INPUT], [image.name], perm=[0, 3, 1, 2],
                                  name=f"{STEM}to_nchw")
    else:
        bridge = helper.make_node("Identity", [IMAGE_INPUT], [image.name], name=f"{STEM}image")
    graph.input.remove(old)
    graph.input.insert(0, helper.make_tensor_value_info(IMAGE_INPUT, elem_type, dims))
    graph.node.insert(0, bridge)
    return dims[0]


class Coverage(NamedTuple):
    """Whether a method has an onnxruntime gradient model, and if not, why."""

    supported: bool
    reason: str = ""


COVERED_METHODS = {
    "grad_cam": lambda layer: GradientRequest(layer, head="grad_cam"),
    "guided_grad_cam": lambda layer: GradientRequest(layer, head="guided_grad_cam"),
    "saliency": lambda layer: GradientRequest(input_gradient="plain"),
}


def onnxruntime_coverage(info: GraphInfo, shapes: dict[str, tuple], layer: str | None,
                         image_size: tuple[int, int]) -> dict[str, Coverage]:
    """For grad_cam and guided_grad_cam at ``layer`` and for saliency: whether the model gets
    an onnxruntime gradient model, and the reason where it does not (for spec/coverage.md)."""
    found = {}
    for method, make in COVERED_METHODS.items():
        if layer is None and method != "saliency":
            found[method] = Coverage(False, "no target layer")
            continue
        try:
            build_gradient_model(info, make(layer), shapes, image_size)
        except UnsupportedGradientError as exc:
            found[method] = Coverage(False, str(exc))
        else:
            found[method] = Coverage(True)
    return found
