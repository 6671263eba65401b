"""onnx2torch converters for ONNX op versions that onnx2torch 1.5 does not register.

onnx2torch looks a converter up by the op's *since-version* at the model's opset, so a graph
exported at opset 18 to 21 asks for ``ReduceMean-18``, ``AveragePool-19``, ``Shape-19`` and the
like, which it lacks, although most of them differ from a registered version only by types
(float8, int4) or by an optional feature. Each entry here rewrites the node to the older form
when the newer feature is unused and hands it to onnx2torch's own converter for that form;
a node that uses the newer feature raises ``NotImplementedError`` saying which. ``Gelu`` (new in
opset 20), attribute-style ``Slice`` (opsets 1 to 9, whose onnx2torch converter fails on an
``axes`` attribute), ``GlobalMaxPool`` and ``Mish``, which classifier heads use, get converters
of their own, and so do ``QuantizeLinear`` / ``DequantizeLinear`` (static int8 quantisation's
QDQ pairs), as fake quantisation with a straight-through gradient (spec/decisions.md,
"Converted models"). Everything is registered through onnx2torch's public ``add_converter``
hook; onnx2torch itself is not modified.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import torch
from onnx import helper
from torch import nn

# (op type, since-version missing in onnx2torch) -> since-version onnx2torch converts, where
# the two differ only in accepted element types or in features checked by a rewrite below.
_TYPE_ONLY = {
    ("Constant", 19): 13, ("Constant", 21): 13,
    ("ConstantOfShape", 20): 9, ("ConstantOfShape", 21): 9,
    ("Dropout", 7): 10,
    ("Equal", 19): 13,
    ("Flatten", 21): 13,
    ("GreaterOrEqual", 16): 12, ("LessOrEqual", 16): 12,
    ("Identity", 19): 16, ("Identity", 21): 16,
    ("IsInf", 20): 10, ("IsNaN", 9): 13, ("IsNaN", 20): 13,
    ("NonZero", 9): 13,
    ("Shape", 19): 15, ("Shape", 21): 15,
    ("Transpose", 21): 13,
    ("Unsqueeze", 21): 13,
}

_REDUCE_OPS = (
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSumSquare",
)


def _attributes(node) -> dict:
    """The node's attributes as Python values (strings stay bytes)."""
    return {attr.name: helper.get_attribute_value(attr) for attr in node.proto.attribute}


def _rewritten(node, inputs: tuple[str, ...] | None = None, drop: tuple[str, ...] = (),
               add: dict | None = None):
    """An OnnxNode like ``node`` with other inputs, attributes ``drop`` removed and ``add``
    added."""
    from onnx2torch.onnx_node import OnnxNode

    proto = onnx.NodeProto()
    proto.CopyFrom(node.proto)
    if inputs is not None:
        del proto.input[:]
        proto.input.extend(inputs)
    kept = [attr for attr in proto.attribute if attr.name not in drop]
    del proto.attribute[:]
    proto.attribute.extend(kept)
    for name, value in (add or {}).items():
        proto.attribute.append(helper.make_attribute(name, value))
    return OnnxNode(proto, unique_name=node.unique_name)


def _constant(name: str, graph) -> np.ndarray | None:
    """Value of a graph initializer (normalised graphs hold every constant as one)."""
    if name in graph.initializers:
        return graph.initializers[name].to_numpy()
    return None


def _unsupported(node, feature: str) -> NotImplementedError:
    return NotImplementedError(f"{node.operation_type} node {node.name!r} uses {feature}")


# --- rewrites: newer form -> older form ---------------------------------------------------

def _reduce_axes_input(node, graph):
    """Reduce*-18 (axes as an input) -> Reduce*-13 (axes as an attribute)."""
    attrs = _attributes(node)
    axes_name = node.input_values[1] if len(node.input_values) > 1 else ""
    add = {}
    if axes_name:
        axes = _constant(axes_name, graph)
        if axes is None:
            raise _unsupported(node, "axes computed at run time")
        if axes.size:
            add["axes"] = [int(a) for a in axes.reshape(-1)]
    if not add and attrs.get("noop_with_empty_axes", 0):
        raise _unsupported(node, "noop_with_empty_axes=1 without axes")
    return _rewritten(node, inputs=node.input_values[:1], drop=("noop_with_empty_axes",),
                      add=add)


def _average_pool_19(node, graph):
    dilations = _attributes(node).get("dilations")
    if dilations and any(d != 1 for d in dilations):
        raise _unsupported(node, f"dilations {list(dilations)}")
    return _rewritten(node, drop=("dilations",))


def _pad_18(node, graph):
    if len(node.input_values) > 3 and node.input_values[3]:
        raise _unsupported(node, "the axes input")
    if _attributes(node).get("mode", b"constant") in (b"wrap", "wrap"):
        raise _unsupported(node, "mode 'wrap'")
    return node


def _resize_18(node, graph):
    attrs = _attributes(node)
    if attrs.get("antialias", 0):
        raise _unsupported(node, "antialias")
    if attrs.get("axes"):
        raise _unsupported(node, "the axes attribute")
    if attrs.get("keep_aspect_ratio_policy", b"stretch") not in (b"stretch", "stretch"):
        raise _unsupported(node, "keep_aspect_ratio_policy")
    if attrs.get("coordinate_transformation_mode") in (b"half_pixel_symmetric",):
        raise _unsupported(node, "coordinate_transformation_mode 'half_pixel_symmetric'")
    return _rewritten(node, drop=("antialias", "axes", "keep_aspect_ratio_policy"))


def _split_18(node, graph):
    return _rewritten(node, drop=("num_outputs",))


def _scatter_nd_18(node, graph):
    if _attributes(node).get("reduction", b"none") in (b"max", b"min"):
        raise _unsupported(node, "reduction max/min")
    return node


def _reshape_19(node, graph):
    """allowzero=1 only matters where the target shape holds a 0; a shape computed at run time
    from a non-empty tensor never does, so only a constant shape with a 0 is refused."""
    if not _attributes(node).get("allowzero", 0):
        return node
    shape = _constant(node.input_values[1], graph)
    if shape is not None and 0 in shape.tolist():
        raise _unsupported(node, "allowzero=1 with a 0 in the target shape")
    return _rewritten(node, drop=("allowzero",))


def _cast_19(node, graph):
    return _rewritten(node, drop=("saturate",))


_REWRITES: dict[tuple[str, int], tuple[Callable, int]] = {
    ("AveragePool", 19): (_average_pool_19, 11),
    ("Pad", 18): (_pad_18, 13), ("Pad", 19): (_pad_18, 13), ("Pad", 21): (_pad_18, 13),
    ("Resize", 18): (_resize_18, 13), ("Resize", 19): (_resize_18, 13),
    ("Split", 18): (_split_18, 13),
    ("ScatterND", 18): (_scatter_nd_18, 16),
    ("Cast", 19): (_cast_19, 13), ("Cast", 21): (_cast_19, 13),
    ("Reshape", 19): (_reshape_19, 14), ("Reshape", 21): (_reshape_19, 14),
    **{(op, 18): (_reduce_axes_input, 13) for op in _REDUCE_OPS},
    ("ReduceMax", 20): (_reduce_axes_input, 13), ("ReduceMin", 20): (_reduce_axes_input, 13),
}


# --- new ops ------------------------------------------------------------------------------

def _gelu(node, graph):
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    approximate = _attributes(node).get("approximate", b"none")
    if isinstance(approximate, bytes):
        approximate = approximate.decode()
    return OperationConverterResult(
        torch_module=nn.GELU(approximate=approximate),
        onnx_mapping=onnx_mapping_from_node(node),
    )


class _GlobalMaxPool(nn.Module):
    def forward(self, x):
        return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


def _module_converter(factory: Callable[[], nn.Module]) -> Callable:
    """A converter for an op that maps to a parameterless torch module."""
    def convert(node, graph):
        from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

        return OperationConverterResult(torch_module=factory(),
                                        onnx_mapping=onnx_mapping_from_node(node))

    return convert


class _StaticSlice(nn.Module):
    """Slice-1 (opsets 1 to 9): starts, ends and axes are attributes; ends beyond the axis
    are clamped and negative values count from the end, as in Python slicing."""

    def __init__(self, starts: list[int], ends: list[int], axes: list[int]):
        super().__init__()
        self.starts, self.ends, self.axes = starts, ends, axes

    def forward(self, x):
        index = [slice(None)] * x.dim()
        for start, end, axis in zip(self.starts, self.ends, self.axes, strict=True):
            index[axis] = slice(start, end)
        return x[tuple(index)]


def _slice_1(node, graph):
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    attrs = _attributes(node)
    starts, ends = list(attrs["starts"]), list(attrs["ends"])
    axes = list(attrs.get("axes", range(len(starts))))
    return OperationConverterResult(
        torch_module=_StaticSlice(starts, ends, axes),
        onnx_mapping=onnx_mapping_from_node(node),
    )


# --- QuantizeLinear / DequantizeLinear: fake quantisation with a straight-through gradient ---

class _RoundStraightThrough(torch.autograd.Function):
    """``clamp(round(x), low, high)`` forward; backward passes the gradient where
    ``low <= x <= high`` and gives 0 outside (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, x, low: float, high: float):
        inside = (x >= low) & (x <= high)
        ctx.save_for_backward(inside)
        return torch.round(x).clamp(low, high)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


def _per_axis(value: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """A per-tensor (scalar) or per-axis (1-D) scale or zero point, broadcastable to ``x``."""
    if value.dim() == 0 or value.numel() == 1:
        return value.reshape(())
    shape = [1] * x.dim()
    shape[axis % x.dim()] = -1
    return value.reshape(shape)


class _QuantizeLinear(nn.Module):
    """ONNX QuantizeLinear as fake quantisation: ``clamp(round(x / scale) + zero_point)`` with
    the zero point's integer range, kept as a float tensor so that gradients flow. Backward:
    ``1 / scale`` inside the range, 0 outside, so a QuantizeLinear -> DequantizeLinear pair
    passes the gradient unchanged inside the range.

    Static quantisation folds a ReLU into the quantisation of its input's producer (the range
    then starts at real value 0); such a node is guided like the ReLU it replaces
    (:func:`dlheatmap.runtime.torch_backend.guide_hook`)."""

    def __init__(self, scale: np.ndarray, zero_point: np.ndarray | None, axis: int):
        super().__init__()
        dtype = np.uint8 if zero_point is None else zero_point.dtype
        info = np.iinfo(dtype)
        self.low, self.high, self.axis = float(info.min), float(info.max), axis
        self.register_buffer("scale", torch.from_numpy(np.asarray(scale, np.float32)))
        self.register_buffer("zero_point", torch.from_numpy(np.asarray(
            0 if zero_point is None else zero_point, np.float32)))
        self.clips_at_zero = bool((self.zero_point == self.low).all())

    def forward(self, x):
        from dlheatmap.runtime.torch_backend import guide_hook

        scale = _per_axis(self.scale, x, self.axis)
        zero = _per_axis(self.zero_point, x, self.axis)
        y = _RoundStraightThrough.apply(x / scale + zero, self.low, self.high)
        return guide_hook(y) if self.clips_at_zero else y


class _DequantizeLinear(nn.Module):
    """ONNX DequantizeLinear: ``(x - zero_point) * scale`` in float32 (exactly linear)."""

    def __init__(self, scale: np.ndarray, zero_point: np.ndarray | None, axis: int):
        super().__init__()
        self.axis = axis
        self.register_buffer("scale", torch.from_numpy(np.asarray(scale, np.float32)))
        self.register_buffer("zero_point", torch.from_numpy(np.asarray(
            0 if zero_point is None else zero_point, np.float32)))

    def forward(self, x):
        x = x.float()
        return (x - _per_axis(self.zero_point, x, self.axis)) * _per_axis(self.scale, x,
                                                                           self.axis)


def _qdq_converter(module_type: type) -> Callable:
    """A converter for QuantizeLinear or DequantizeLinear whose scale and zero point are
    initializers (as static quantisation writes them); only the data input stays an input."""
    def convert(node, graph):
        from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

        attrs = _attributes(node)
        if attrs.get("block_size", 0):
            raise _unsupported(node, "blocked quantisation (block_size)")
        names = list(node.input_values) + [""] * 3
        scale = _constant(names[1], graph)
        if scale is None:
            raise _unsupported(node, "a scale computed at run time")
        zero_point = _constant(names[2], graph) if names[2] else None
        return OperationConverterResult(
            torch_module=module_type(scale, zero_point, int(attrs.get("axis", 1))),
            onnx_mapping=OnnxMapping(inputs=(names[0],), outputs=tuple(node.output_values)))

    return convert


def _since_versions(op_type: str) -> list[int]:
    return sorted({schema.since_version for schema in onnx.defs.get_all_schemas_with_history()
                   if schema.name == op_type and schema.domain == ""})


_NEW_OPS: dict[tuple[str, int], Callable] = {
    ("Gelu", 20): _gelu,
    ("Slice", 1): _slice_1,
    ("GlobalMaxPool", 1): _module_converter(_GlobalMaxPool),
    ("Mish", 18): _module_converter(nn.Mish),
    **{(op, version): _qdq_converter(module)
       for op, module in (("QuantizeLinear", _QuantizeLinear),
                          ("DequantizeLinear", _DequantizeLinear))
       for version in _since_versions(op)},
}


# --- registration -------------------------------------------------------------------------

def register(add_converter: Callable, registry: dict) -> None:
    """Add the converters above to onnx2torch's registry (idempotent).

    ``registry`` maps onnx2torch's OperationDescription(domain, operation_type, version) to
    converters; the older forms are looked up in it directly, because onnx2torch's own lookup
    would resolve e.g. Slice-9 back to Slice-1.
    """
    known = {(key.operation_type, key.version) for key in registry if key.domain == ""}
    older_converters = {
        (key.operation_type, key.version): converter
        for key, converter in registry.items() if key.domain == ""
    }
    aliases = {key: (_unchanged, older) for key, older in _TYPE_ONLY.items()}
    aliases.update(_REWRITES)
    for (op, version), (rewrite, older) in aliases.items():
        target = older_converters.get((op, older))
        if (op, version) not in known and target is not None:
            add_converter(operation_type=op, version=version)(_delegate(target, rewrite))
    for (op, version), converter in _NEW_OPS.items():
        if (op, version) not in known:
            add_converter(operation_type=op, version=version)(converter)


def _unchanged(node, graph):
    return node


def _delegate(target: Callable, rewrite: Callable) -> Callable:
    def convert(node, graph):
        return target(rewrite(node, graph), graph)

    return convert
