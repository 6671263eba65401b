"""Reference truths computed without dlheatmap's engines: the ONNX graph converted to torch by
onnx2torch itself, torch autograd, captum, and a bilinear resize written out in numpy."""

from __future__ import annotations

import numpy as np
import torch

from dlheatmap.graph import load_model


def converted_module(path, frozen: bool = True) -> torch.nn.Module:
    """The ONNX graph converted to torch by onnx2torch itself, with ONNX tensor names
    (eval mode; ``frozen``: its parameters need no gradients).

    onnx2torch 1.5 lacks converters for some ops torch's exporters write at opset 20
    (AveragePool-19, ...); dlheatmap registers them with onnx2torch (each checked against
    onnxruntime in tests/test_graph.py). They are registered here explicitly, as dlheatmap
    may not have converted anything in this process yet.
    """
    from dlheatmap.runtime.torch_backend import onnx2torch_api

    module = onnx2torch_api().convert(load_model(path), attach_onnx_mapping=True).eval()
    if frozen:
        module.requires_grad_(False)
    return module


def producing(module: torch.nn.Module, tensor: str) -> torch.nn.Module:
    """The child of a converted module whose output is the ONNX tensor ``tensor``."""
    for child in module.children():
        mapping = getattr(child, "onnx_mapping", None)
        if mapping is not None and tensor in mapping.outputs:
            return child
    raise LookupError(tensor)


def nchw(images: np.ndarray) -> torch.Tensor:
    """N x H x W x C images as a contiguous N x C x H x W tensor (same dtype)."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def f64(array: np.ndarray) -> torch.Tensor:
    """``array`` as a float64 tensor: hand-written truths in double precision."""
    return torch.from_numpy(np.asarray(array, np.float64))


def bilinear_resize(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize of [..., h, w] maps with clamped edges, in numpy."""
    def axis(out_size, in_size):
        src = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
        low = np.floor(src).astype(int)
        return low, np.minimum(low + 1, in_size - 1), src - low

    r0, r1, fr = axis(height, maps.shape[-2])
    c0, c1, fc = axis(width, maps.shape[-1])
    top = maps[..., r0, :][..., c0] * (1 - fc) + maps[..., r0, :][..., c1] * fc
    bottom = maps[..., r1, :][..., c0] * (1 - fc) + maps[..., r1, :][..., c1] * fc
    return top * (1 - fr)[:, None] + bottom * fr[:, None]


def captum_layer_map(path, images: np.ndarray, layer_tensor: str,
                     targets: np.ndarray) -> np.ndarray:
    """captum's LayerGradCam (no ReLU) at the ONNX tensor ``layer_tensor``: N x h x w."""
    from captum.attr import LayerGradCam

    module = converted_module(path)
    layer = producing(module, layer_tensor)
    attribution = LayerGradCam(module, layer).attribute(
        nchw(images), target=torch.from_numpy(targets), relu_attributions=False)
    return attribution[:, 0].detach().numpy()


def captum_guided_backprop(module: torch.nn.Module, images: np.ndarray,
                           target: int) -> np.ndarray:
    """captum's GuidedBackprop of ``target`` on a converted module: N x H x W x C."""
    from captum.attr import GuidedBackprop

    attribution = GuidedBackprop(module).attribute(nchw(images), target=target)
    return attribution.detach().numpy().transpose(0, 2, 3, 1)
