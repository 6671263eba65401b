"""Activations and gradients of a target layer, computed with the split design.

Grad-CAM needs the target layer's activation and the gradient of the class score with respect
to it. The forward pass up to the layer is plain inference, and only the layers after it (the
"tail") need differentiating. Two engines do that:

- onnxruntime, where every op of the tail has a gradient rule (:mod:`dlheatmap.graph.backward`):
  the tail's backward pass is appended to the graph, and one run returns the output, the
  activation and the gradient, at little more than the cost of an inference;
- torch otherwise (and for several classes per sample, or the probability as the score):
  onnxruntime does the forward pass and also returns the activation and every other tensor the
  tail reads; the tail alone is converted to torch and autograd differentiates it with respect
  to the activation: no weight gradients, no second forward pass.

Guided backpropagation needs gradients down to the input image, so it runs the whole graph in
torch once, with guidable ReLUs, and takes two backward passes (plain to the layer, guided to
the input) from that single forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from dlheatmap.errors import HOperatorError
from dlheatmap.graph import backward, extract_subgraph, tail_nodes
from dlheatmap.model import Model, pad_batch
from dlheatmap.params import ModelParams
from dlheatmap.runtime.devices import Device
from dlheatmap.runtime.onnx_runtime import make_session

SCORES = ("logit", "probability")
ENGINES = ("auto", "onnxruntime", "torch")


@dataclass(frozen=True, eq=False)  # eq would compare index arrays element-wise
class Targets:
    """The classes whose scores are differentiated, as indices into the model's output.

    Parameters
    ----------
    indices : ndarray of int, optional
        None: each sample's most probable class. [T]: the same T classes for every sample.
        [N, T]: T classes per sample, one row per sample of the call.
    """

    indices: np.ndarray | None = None

    @property
    def per_sample(self) -> int:
        """How many classes each sample is explained for (T)."""
        return 1 if self.indices is None else int(np.shape(self.indices)[-1])

    def __call__(self, probabilities: np.ndarray, start: int = 0) -> np.ndarray:
        """Class indices [n, T] for the batch of ``n`` samples that starts at sample ``start``.

        Rows past the call's last sample (a padded fixed-size batch) get class 0.
        """
        count = len(probabilities)
        if self.indices is None:
            return probabilities.argmax(axis=1)[:, None]
        return self._rows(start, count, fill=0)

    def graph_input(self, start: int, count: int) -> np.ndarray:
        """The classes of a one-target batch as :mod:`dlheatmap.graph.backward` takes them:
        int64 [count], -1 for the most probable class."""
        if self.indices is None:
            return np.full(count, -1, np.int64)
        return self._rows(start, count, fill=-1)[:, 0]

    def _rows(self, start: int, count: int, fill: int) -> np.ndarray:
        indices = np.asarray(self.indices, dtype=np.int64)
        if indices.ndim == 1:
            return np.repeat(indices[None], count, axis=0)
        rows = indices[start : start + count]
        missing = count - len(rows)
        return np.pad(rows, ((0, missing), (0, 0)), constant_values=fill) if missing else rows


@dataclass
class LayerGradients:
    """What one pass over a batch yields.

    Attributes
    ----------
    probabilities : ndarray, [N, classes]
    targets : ndarray of int, [N, T]
        Class indices the gradients are taken for.
    activations : ndarray, [N, C, h, w]
    gradients : ndarray, [T, N, C, h, w]
        d score(target) / d activation for each target column.
    input_gradients : ndarray or None, [T, N, H, W, C]
        Guided (or plain) gradients with respect to the input image, in HALCON layout.
    grad_cam : ndarray or None, [N, h, w]
        The Grad-CAM map (from :func:`graph_grad_cam`).
    heatmaps : ndarray or None, [N, H, W]
        That map resized to the images and scaled.
    """

    probabilities: np.ndarray
    targets: np.ndarray
    activations: np.ndarray | None
    gradients: np.ndarray | None
    input_gradients: np.ndarray | None = None
    grad_cam: np.ndarray | None = None
    heatmaps: np.ndarray | None = None


@dataclass(frozen=True)
class _Tail:
    module: object  # torch.fx.GraphModule
    side_inputs: tuple[str, ...]


def _torch():
    import torch

    return torch


def _score_tensor(model: Model) -> str:
    return model.info.score_tensor


def _tail(model: Model, layer_tensor: str, device: Device) -> _Tail:
    def build() -> _Tail:
        from dlheatmap.runtime import torch_backend

        nodes, side_inputs = tail_nodes(model.info, layer_tensor, _score_tensor(model))
        inputs = {name: _rank_and_type(model, name) for name in (layer_tensor, *side_inputs)}
        graph = extract_subgraph(model.info, nodes, inputs, [_score_tensor(model)], "tail")
        module = torch_backend.convert(graph, "gen_dl_model_heatmap")
        return _Tail(_place(module, device), tuple(side_inputs))

    return model.cached(("tail", layer_tensor, device), build)


def _full(model: Model, layer_tensor: str | None, device: Device):
    """The whole graph in torch with guidable ReLUs, returning the score tensor and, if
    ``layer_tensor`` is given, that layer's activation."""
    def build():
        from dlheatmap.runtime import torch_backend

        score = _score_tensor(model)
        image = model.info.image_input
        nodes, _ = tail_nodes(model.info, image.name, score)
        elem_type = onnx.helper.np_dtype_to_tensor_dtype(image.dtype)
        outputs = [score] if layer_tensor is None else [score, layer_tensor]
        graph = extract_subgraph(model.info, nodes, {image.name: (4, elem_type)}, outputs, "full")
        module = torch_backend.convert(graph, "gen_dl_model_heatmap")
        torch_backend.make_guidable(module)
        return _place(module, device)

    return model.cached(("full", layer_tensor, device), build)


def _place(module, device: Device):
    """``module`` on ``device`` with its convolution weights channels-last in memory: torch's
    convolutions then run channels-last, markedly faster on the CPU than NCHW (about 1.2 x
    for ResNet-50 forward and backward at batch 8, 1.3 x for MobileNetV3)."""
    module = module.to(device.torch_device)
    for param in module.parameters():
        if param.dim() == 4:  # Module.to(memory_format=...) would also touch 5-D buffers
            param.data = param.data.contiguous(memory_format=_torch().channels_last)
    return module


def _input_tensor(model: Model, images: np.ndarray, device: Device):
    """N x H x W x C images as the graph's input tensor. For an NCHW graph it is a permuted view
    of the HALCON-layout array, so it is channels-last in memory without a copy."""
    torch = _torch()
    image = model.info.image_input
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=image.dtype))
    if image.layout == "NCHW":
        tensor = tensor.permute(0, 3, 1, 2)
    return tensor.to(device.torch_device)


def _rank_and_type(model: Model, tensor: str) -> tuple[int, int]:
    shape = model.tensor_shapes().get(tensor)
    rank = len(shape) if shape is not None else 4
    return rank, onnx.TensorProto.FLOAT


def layer_gradients(
    model: Model,
    images: np.ndarray,
    choose: Targets,
    layer_tensor: str,
    params: ModelParams,
    score: str = "logit",
    engine: str = "auto",
) -> LayerGradients:
    """Activation of ``layer_tensor`` and gradients of the chosen class scores, batch by batch.

    ``images`` are N x H x W x C in HALCON layout and already validated. ``engine`` 'auto'
    differentiates in onnxruntime where the tail's ops allow it (one class per sample, the
    logit as the score) and in torch otherwise; 'onnxruntime' and 'torch' insist (the first
    raises ValueError where it cannot be used).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    session = None
    if engine != "torch" and score == "logit" and choose.per_sample == 1:
        session = _gradient_session(model, layer_tensor, params)
    if engine == "onnxruntime" and session is None:
        raise ValueError("the tail after this layer cannot be differentiated in onnxruntime")
    if session is not None:
        return _batched(model, images, params, lambda batch, start, device: _graph_pass(
            model, session, batch, start, choose, layer_tensor))
    return _batched(model, images, params, lambda batch, start, device: _layer_pass(
        model, batch, start, choose, layer_tensor, device, score))


def graph_grad_cam(
    model: Model,
    images: np.ndarray,
    choose: Targets,
    layer_tensor: str,
    params: ModelParams,
    scaling: str,
) -> LayerGradients | None:
    """Grad-CAM maps and heatmaps (HALCON's ``scaling``) computed whole by onnxruntime, with
    the probabilities and targets; None where the onnxruntime engine does not apply.

    Only what Grad-CAM returns leaves onnxruntime: no activations or gradients are copied.
    """
    if choose.per_sample != 1:
        return None
    session = _gradient_session(model, layer_tensor, params)
    if session is None:
        return None
    return _batched(model, images, params, lambda batch, start, device: _graph_pass(
        model, session, batch, start, choose, None, scaling))


def guided_gradients(
    model: Model,
    images: np.ndarray,
    choose: Targets,
    layer_tensor: str | None,
    params: ModelParams,
    score: str = "logit",
    guided: bool = True,
) -> LayerGradients:
    """Layer gradients (plain) and input gradients (guided unless ``guided`` is False) from a
    single torch forward pass over the whole graph."""
    return _batched(model, images, params, lambda batch, start, device: _full_pass(
        model, batch, start, choose, layer_tensor, device, score, guided))


def _batched(model: Model, images: np.ndarray, params: ModelParams, one_batch) -> LayerGradients:
    device = model.device_for(params)
    parts = []
    for start, stop, padded in model.batches(len(images), params):
        result = one_batch(pad_batch(images[start:stop], padded), start, device)
        parts.append(_trim(result, stop - start))
    return _concatenate(parts)


def _gradient_session(model: Model, layer_tensor: str, params: ModelParams):
    """The onnxruntime session of the model with Grad-CAM appended, or None where a tail op
    has no gradient rule. Rules read sizes that follow the input size."""
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


def _graph_pass(model, session, images, start, choose: Targets, layer_tensor: str | None,
                scaling: str = "none") -> LayerGradients:
    """One onnxruntime run of the Grad-CAM model: the layer's activation and gradient when
    ``layer_tensor`` is given, else the Grad-CAM map and heatmap."""
    feed = {backward.IMAGE_INPUT: np.ascontiguousarray(images, dtype=np.float32),
            backward.TARGET_INPUT: choose.graph_input(start, len(images)),
            backward.SCALING_INPUT: backward.scaling_input(scaling)}
    names = [model.info.output_name, backward.CHOSEN_OUTPUT]
    if layer_tensor is not None:
        output, chosen, activation, gradient = session.run(
            [*names, layer_tensor, backward.GRADIENT_OUTPUT], feed)
        return LayerGradients(model.probabilities(output), chosen[:, None], activation,
                              gradient[None])
    output, chosen, cam, heatmap = session.run(
        [*names, backward.CAM_OUTPUT, backward.HEATMAP_OUTPUT], feed)
    return LayerGradients(model.probabilities(output), chosen[:, None], None, None,
                          grad_cam=cam, heatmaps=heatmap[:, 0])


def _layer_pass(model, images, start, choose, layer_tensor, device, score) -> LayerGradients:
    torch = _torch()
    tail = _tail(model, layer_tensor, device)
    output, activation, *sides = model.run(images, (layer_tensor, *tail.side_inputs), device)
    probabilities = model.probabilities(output)
    targets = choose(probabilities, start)
    with torch.enable_grad():
        act = torch.from_numpy(activation).to(device.torch_device).requires_grad_(True)
        side_tensors = [torch.from_numpy(side).to(device.torch_device) for side in sides]
        scores = _scores(tail.module(act, *side_tensors), score)
        grads = _grads_per_target(scores, targets, act)
    return LayerGradients(probabilities, targets, activation, grads)


def _full_pass(
    model, images, start, choose, layer_tensor, device, score, guided
) -> LayerGradients:
    from dlheatmap.runtime.torch_backend import Guide, guiding

    torch = _torch()
    module = _full(model, layer_tensor, device)
    x = _input_tensor(model, images, device).requires_grad_(True)
    guide = Guide()
    with torch.enable_grad(), guiding(guide):
        outputs = module(x)
        logits, act = outputs if layer_tensor is not None else (outputs, None)
        logits = logits.reshape(logits.shape[0], -1)
        # The score tensor is the logit (before any final Softmax), so softmax of it gives the
        # same confidences as the model's own output.
        probabilities = torch.softmax(logits.detach(), dim=1).cpu().numpy()
        targets = choose(probabilities, start)
        scores = _scores(logits, score)
        grads = None
        if layer_tensor is not None:
            grads = _grads_per_target(scores, targets, act, keep_graph=True)
        guide.guided = guided
        input_grads = _grads_per_target(scores, targets, x)
    input_grads = np.stack([model.from_model_layout(g) for g in input_grads])
    activation = act.detach().cpu().numpy() if layer_tensor is not None else None
    return LayerGradients(probabilities, targets, activation, grads, input_grads)


def _scores(output, score: str):
    """Class scores [N, classes] from the differentiated tensor."""
    output = output.reshape(output.shape[0], -1)
    if score == "probability":  # the differentiated tensor is always the logit
        return _torch().softmax(output, dim=1)
    return output


def _grads_per_target(scores, targets: np.ndarray, wrt, keep_graph: bool = False) -> np.ndarray:
    torch = _torch()
    index = torch.from_numpy(targets).to(scores.device)
    grads = []
    for column in range(targets.shape[1]):
        chosen = scores.gather(1, index[:, column : column + 1]).sum()
        retain = keep_graph or column < targets.shape[1] - 1
        (grad,) = torch.autograd.grad(chosen, wrt, retain_graph=retain)
        grads.append(grad.detach().cpu().numpy())
    return np.stack(grads)


def _trim(result: LayerGradients, count: int) -> LayerGradients:
    def cut(array, axis=0):
        if array is None:
            return None
        return array[:count] if axis == 0 else array[:, :count]

    return LayerGradients(
        cut(result.probabilities), cut(result.targets), cut(result.activations),
        cut(result.gradients, 1), cut(result.input_gradients, 1), cut(result.grad_cam),
        cut(result.heatmaps))


def _concatenate(parts: list[LayerGradients]) -> LayerGradients:
    if len(parts) == 1:  # one batch: nothing to copy
        return parts[0]

    def join(name, axis=0):
        arrays = [getattr(part, name) for part in parts]
        return None if arrays[0] is None else np.concatenate(arrays, axis=axis)

    return LayerGradients(
        join("probabilities"), join("targets"), join("activations"),
        join("gradients", 1), join("input_gradients", 1), join("grad_cam"), join("heatmaps"))
