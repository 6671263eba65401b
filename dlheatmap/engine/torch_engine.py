"""The torch engine: the graph converted with onnx2torch and differentiated by autograd.

Two forms, each differentiating no more than it must:

- the *tail*: onnxruntime runs the forward pass and returns the layer's activation and every
  other tensor the layers after it read; only those layers run in torch, differentiated with
  respect to the activation (no weight gradients, no second forward pass);
- the *whole graph*, with guidable ReLUs, for gradients with respect to the image: one forward
  pass, then a plain backward pass to the layer and a guided (or plain) one to the image.
"""

from __future__ import annotations

import numpy as np

from dlheatmap.engine.evidence import Evidence, Needs, Targets
from dlheatmap.model import Model, softmax
from dlheatmap.runtime.devices import Device

NAME = "torch"
OPERATOR = "gen_dl_model_heatmap"


def _torch():
    import torch

    return torch


def _tail(model: Model, layer_tensor: str, device: Device):
    def build():
        from dlheatmap.runtime import torch_backend

        ranks = {name: len(shape) for name, shape in model.tensor_shapes().items()}
        return torch_backend.tail_module(model.info, layer_tensor, ranks, device, OPERATOR)

    return model.cached(("tail", layer_tensor, device), build)


def _whole(model: Model, layer_tensor: str | None, device: Device):
    def build():
        from dlheatmap.runtime import torch_backend

        return torch_backend.whole_module(model.info, layer_tensor, device, OPERATOR)

    return model.cached(("full", layer_tensor, device), build)


def run_batch(model: Model, images: np.ndarray, start: int, targets: Targets,
              layer_tensor: str | None, needs: Needs, score: str, device: Device) -> Evidence:
    """Evidence for one batch: through the whole graph where the image's gradient is needed,
    through the tail after the layer otherwise."""
    if needs.input_gradients is not None:
        return _whole_pass(model, images, start, targets, layer_tensor, device, score,
                           needs.input_gradients == "guided")
    return _tail_pass(model, images, start, targets, layer_tensor, device, score)


def _tail_pass(model, images, start, targets, layer_tensor, device, score) -> Evidence:
    torch = _torch()
    tail = _tail(model, layer_tensor, device)
    output, activation, *sides = model.run(images, (layer_tensor, *tail.side_inputs), device)
    probabilities = model.probabilities(output)
    chosen = targets(probabilities, start)
    with torch.enable_grad():
        act = torch.from_numpy(activation).to(device.torch_device).requires_grad_(True)
        side_tensors = [torch.from_numpy(side).to(device.torch_device) for side in sides]
        scores = _scores(tail.module(act, *side_tensors), score)
        grads = _grads_per_target(scores, chosen, act)
    return Evidence(probabilities, chosen, activations=activation, gradients=grads)


def _whole_pass(model, images, start, targets, layer_tensor, device, score,
                guided: bool) -> Evidence:
    from dlheatmap.runtime.torch_backend import Guide, guiding

    torch = _torch()
    module = _whole(model, layer_tensor, device)
    x = _input_tensor(model, images, device).requires_grad_(True)
    guide = Guide()
    with torch.enable_grad(), guiding(guide):
        outputs = module(x)
        logits, act = outputs if layer_tensor is not None else (outputs, None)
        logits = logits.reshape(logits.shape[0], -1)
        # The score tensor is the logit (before any final Softmax), so softmax of it gives the
        # same confidences as the model's own output; the same softmax as for onnxruntime's.
        probabilities = softmax(logits.detach().cpu().numpy())
        chosen = targets(probabilities, start)
        scores = _scores(logits, score)
        grads = None
        if layer_tensor is not None:
            grads = _grads_per_target(scores, chosen, act, keep_graph=True)
        guide.guided = guided
        input_grads = _grads_per_target(scores, chosen, x)
    input_grads = np.stack([model.from_model_layout(g) for g in input_grads])
    activation = act.detach().cpu().numpy() if layer_tensor is not None else None
    return Evidence(probabilities, chosen, activations=activation, gradients=grads,
                    input_gradients=input_grads)


def _input_tensor(model: Model, images: np.ndarray, device: Device):
    """N x H x W x C images as the graph's input tensor. For an NCHW graph it is a permuted view
    of the HALCON-layout array, so it is channels-last in memory without a copy."""
    torch = _torch()
    image = model.info.image_input
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=image.dtype))
    if image.layout == "NCHW":
        tensor = tensor.permute(0, 3, 1, 2)
    return tensor.to(device.torch_device)


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
