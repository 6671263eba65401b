"""The PyTorch side: converting ONNX (sub)graphs with onnx2torch and guided backpropagation.

Imported only when a gradient is needed. onnx2torch imports torchvision at import time, only
for two detection ops (NonMaxSuppression, RoiAlign); where torchvision is missing or broken,
those two converters are left out and everything else works.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import onnx
import torch
from torch import nn

from dlheatmap.errors import ErrorCode, HOperatorError
from dlheatmap.graph import (
    GraphInfo,
    extract_subgraph,
    float32_copy,
    fold_constant_dequantize,
    has_float16,
    is_relu_clip,
    tail_nodes,
)
from dlheatmap.runtime.devices import Device

_TORCHVISION_CONVERTERS = ("nms", "roialign")


def _torchvision_usable() -> bool:
    try:
        importlib.import_module("torchvision.ops")
    except Exception:  # ImportError, or RuntimeError from a torchvision built for another torch
        return False
    return True


@lru_cache(maxsize=1)
def onnx2torch_api() -> types.SimpleNamespace:
    """onnx2torch's ``convert`` and ``get_converter``, importable without torchvision."""
    if "onnx2torch" not in sys.modules and not _torchvision_usable():
        for name in _TORCHVISION_CONVERTERS:
            stub = types.ModuleType(f"onnx2torch.node_converters.{name}")
            stub.__all__ = []
            sys.modules[stub.__name__] = stub
    from onnx2torch import convert
    from onnx2torch.node_converters import add_converter, get_converter
    from onnx2torch.node_converters.clip import OnnxClip
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY
    from onnx2torch.onnx_graph import OnnxGraph
    from onnx2torch.utils.safe_shape_inference import safe_shape_inference

    from dlheatmap.runtime.converters import register

    register(add_converter, _CONVERTER_REGISTRY)
    return types.SimpleNamespace(
        convert=convert, get_converter=get_converter, OnnxClip=OnnxClip, OnnxGraph=OnnxGraph,
        shape_inference=safe_shape_inference)


def convert(model: onnx.ModelProto, operator: str) -> nn.Module:
    """Convert ``model`` to a frozen torch module in eval mode.

    A graph with float16 weights is converted from its float32 copy
    (:func:`dlheatmap.graph.float32_copy`) and wrapped in :class:`Float32Inputs`, so the module
    computes in float32 whatever onnxruntime hands it. Quantised weights (DequantizeLinear of
    initializers) become the float initializers they compute.

    Raises
    ------
    HOperatorError
        7801 naming the ONNX op and node that onnx2torch cannot convert.
    """
    api = onnx2torch_api()
    widen = has_float16(model)
    if widen:
        model = float32_copy(model)
    model = fold_constant_dequantize(model)
    _check_converters(model, api, operator)
    try:
        module = api.convert(model)
    except Exception as exc:
        raise HOperatorError(ErrorCode.READ_ONNX,
                             _conversion_failure(model, api, exc), operator) from exc
    if widen:
        module = Float32Inputs(module)
    module.eval()
    module.requires_grad_(False)
    return module


class Float32Inputs(nn.Module):
    """A converted float16 graph's float32 copy, fed float32: the activations onnxruntime
    returns from the float16 graph arrive as float16 and are widened (differentiably, so a
    gradient with respect to them comes back in their own type)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *inputs: torch.Tensor):
        return self.inner(*(x.float() if x.is_floating_point() else x for x in inputs))


def _check_converters(model: onnx.ModelProto, api: types.SimpleNamespace, operator: str) -> None:
    versions = {opset.domain: opset.version for opset in model.opset_import}
    for node in model.graph.node:
        try:
            api.get_converter(
                domain=node.domain, operation_type=node.op_type, version=versions[node.domain]
            )
        except (NotImplementedError, KeyError) as exc:
            raise HOperatorError(
                ErrorCode.READ_ONNX,
                f"onnx2torch has no converter for op {node.op_type!r} "
                f"(opset {versions.get(node.domain)}) used by node {node.name!r}; gradients "
                "cannot be computed through it",
                operator,
            ) from exc


def _conversion_failure(model: onnx.ModelProto, api: types.SimpleNamespace, exc: Exception) -> str:
    """A message naming the node whose converter failed, found by converting node by node."""
    reason = f"{type(exc).__name__}: {exc}"
    versions = {opset.domain: opset.version for opset in model.opset_import}
    try:
        graph = api.OnnxGraph(api.shape_inference(model).graph)
    except Exception:  # the diagnosis is best effort; the original error is still reported
        return f"onnx2torch failed to convert the graph: {reason}"
    for node in graph.nodes.values():
        try:
            converter = api.get_converter(
                domain=node.domain, operation_type=node.operation_type,
                version=versions.get(node.domain, versions.get("", 1)))
            converter(node, graph)
        except Exception as node_exc:
            return (
                f"onnx2torch cannot convert op {node.operation_type!r} used by node "
                f"{node.name!r} ({type(node_exc).__name__}: {node_exc}); gradients cannot be "
                "computed through it"
            )
    return f"onnx2torch failed to convert the graph: {reason}"


# --- guided backpropagation --------------------------------------------------------------


class Guide:
    """Per-call switch for guided backpropagation.

    Every guidable ReLU's output registers :meth:`hook` during the forward pass; the switch is
    read during the backward pass, so one forward pass serves a plain backward (Grad-CAM) and
    then a guided one.
    """

    __slots__ = ("guided",)

    def __init__(self) -> None:
        self.guided = False

    def hook(self, grad: torch.Tensor) -> torch.Tensor | None:
        """Keep only the positive part of the gradient arriving at a ReLU's output when guided.

        The ReLU's own backward then applies its mask, so the gradient passed on is
        (output > 0) * max(grad, 0), guided backpropagation's rule.
        """
        return grad.clamp(min=0.0) if self.guided else None


_ACTIVE_GUIDE: contextvars.ContextVar[Guide | None] = contextvars.ContextVar(
    "dlheatmap_guide", default=None
)


@contextlib.contextmanager
def guiding(guide: Guide) -> Iterator[Guide]:
    """Make forward passes on this thread record ReLUs for ``guide``."""
    token = _ACTIVE_GUIDE.set(guide)
    try:
        yield guide
    finally:
        _ACTIVE_GUIDE.reset(token)


def guide_hook(y: torch.Tensor) -> torch.Tensor:
    """``y``, the output of a ReLU-like op, registered for guiding inside a :func:`guiding`
    block (ReLUs folded into a quantisation use it)."""
    guide = _ACTIVE_GUIDE.get()
    if guide is not None and y.requires_grad:
        y.register_hook(guide.hook)
    return y


class GuidableReLU(nn.Module):
    """ReLU (``upper`` None), ReLU6 or Clip(0, upper) that guided backpropagation can steer.

    The activation itself is torch's native op, forward and backward; inside a
    :func:`guiding` block a gradient hook on its output does the guiding. Outside one, or
    without autograd, it is the plain activation.
    """

    def __init__(self, upper: float | None = None):
        super().__init__()
        self.upper = upper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upper is None:
            y = torch.relu(x)
        else:
            y = torch.nn.functional.hardtanh(x, 0.0, self.upper)
        return guide_hook(y)


def make_guidable(module: nn.Module) -> int:
    """Replace ReLU, ReLU6 and Clip(0, x) submodules by ``GuidableReLU``; return how many."""
    clip_type = onnx2torch_api().OnnxClip
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            upper = _relu_upper_bound(child, clip_type)
            if upper is not False:
                setattr(parent, name, GuidableReLU(upper))
                replaced += 1
    return replaced


def _relu_upper_bound(module: nn.Module, clip_type: type) -> float | bool | None:
    """The upper bound of a ReLU-like module (None: unbounded), or False if it is not one."""
    if type(module) is nn.ReLU:
        return None
    if type(module) is nn.ReLU6:
        return 6.0
    if isinstance(module, clip_type) and is_relu_clip(module.min_val):
        return None if module.max_val is None else float(module.max_val)
    return False


# --- modules for the torch engine ---------------------------------------------------------


@dataclass(frozen=True)
class TailModule:
    """The layers after a tensor, as a torch module taking that tensor and ``side_inputs``
    (other tensors the tail reads, which onnxruntime's forward pass supplies)."""

    module: torch.fx.GraphModule
    side_inputs: tuple[str, ...]


def tail_module(info: GraphInfo, layer_tensor: str, ranks: dict[str, int],
                device: Device, operator: str) -> TailModule:
    """The graph from ``layer_tensor`` to the score tensor in torch, on ``device``.

    ``ranks`` gives the rank of every tensor the tail may read (4 where unknown)."""
    score = info.score_tensor
    nodes, side_inputs = tail_nodes(info, layer_tensor, score)
    inputs = {name: (ranks.get(name, 4), onnx.TensorProto.FLOAT)
              for name in (layer_tensor, *side_inputs)}
    graph = extract_subgraph(info, nodes, inputs, [score], "tail")
    return TailModule(place(convert(graph, operator), device), tuple(side_inputs))


def whole_module(info: GraphInfo, layer_tensor: str | None, device: Device,
                 operator: str) -> torch.fx.GraphModule:
    """The whole graph in torch with guidable ReLUs, returning the score tensor and, if
    ``layer_tensor`` is given, that tensor too."""
    score = info.score_tensor
    image = info.image_input
    nodes, _ = tail_nodes(info, image.name, score)
    elem_type = onnx.helper.np_dtype_to_tensor_dtype(image.dtype)
    outputs = [score] if layer_tensor is None else [score, layer_tensor]
    graph = extract_subgraph(info, nodes, {image.name: (4, elem_type)}, outputs, "full")
    module = convert(graph, operator)
    make_guidable(module)
    return place(module, device)


def place(module: nn.Module, device: Device) -> nn.Module:
    """``module`` on ``device`` with its convolution weights channels-last in memory: torch's
    convolutions then run channels-last, markedly faster on the CPU than NCHW (about 1.2 x
    for ResNet-50 forward and backward at batch 8, 1.3 x for MobileNetV3)."""
    module = module.to(device.torch_device)
    for param in module.parameters():
        if param.dim() == 4:  # Module.to(memory_format=...) would also touch 5-D buffers
            param.data = param.data.contiguous(memory_format=torch.channels_last)
    return module
