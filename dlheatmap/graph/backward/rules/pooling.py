"""Rules for pooling and reductions.

Max pooling sends each window's gradient to the element onnxruntime picked (its Indices
output, added to the forward node); a reduction's maximum or minimum splits it evenly among
tied elements, as torch's amax does. Average pooling spreads each window's gradient evenly
over the window, with onnxruntime's own divisor (count_include_pad, ceil_mode).
"""

from __future__ import annotations

import numpy as np

from dlheatmap.graph.backward.builder import UnsupportedGradientError, attributes
from dlheatmap.graph.backward.registry import rule
from dlheatmap.graph.backward.rules.linear import conv_pads, transposed_conv


def _spatial(b, x: str) -> list[int]:
    return list(range(2, b.rank(x)))


@rule("GlobalAveragePool")
def _global_average_pool(b, node, dy, needs):
    x = node.input[0]
    area = int(np.prod(b.shape(x)[2:]))
    return {0: b.spread(b.scaled(dy, 1.0 / area), x)}


def reduced_axes(b, node) -> list[int]:
    """The axes a Reduce* node reduces (attribute, or input since opset 13/18), sorted."""
    x = node.input[0]
    rank = b.rank(x)
    attrs = attributes(node)
    axes = attrs.get("axes")
    if len(node.input) > 1 and node.input[1]:
        axes = b.constant_input(node, 1, "axes").tolist()
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return []
        axes = list(range(rank))
    axes = sorted(int(axis) % rank for axis in axes)
    if 0 in axes:
        raise UnsupportedGradientError(f"{node.op_type} over the batch axis")
    return axes


def _kept(b, node, dy: str, axes: list[int]) -> str:
    """``dy`` with the reduced axes kept (as size 1)."""
    return dy if attributes(node).get("keepdims", 1) or not axes else b.unsqueeze(dy, axes)


@rule("ReduceMean", "ReduceSum", inputs=(0,))
def _reduce_mean(b, node, dy, needs):
    x = node.input[0]
    axes = reduced_axes(b, node)
    dy = _kept(b, node, dy, axes)
    if node.op_type == "ReduceMean":
        dy = b.scaled(dy, 1.0 / int(np.prod([b.shape(x)[a] for a in axes])))
    return {0: b.spread(dy, x)}


def _to_extremes(b, x: str, y: str, dy: str, axes: list[int]) -> str:
    """``dy`` (reduced axes kept) shared among the elements of ``x`` equal to ``y``."""
    hits = b.mask(b.add("Equal", [x, y]))
    return b.add("Mul", [hits, b.add("Div", [dy, b.reduce("ReduceSum", hits, axes)])])


@rule("ReduceMax", "ReduceMin", inputs=(0,))
def _reduce_max(b, node, dy, needs):
    x = node.input[0]
    axes = reduced_axes(b, node)
    keep = attributes(node).get("keepdims", 1)
    y = node.output[0] if keep else b.unsqueeze(node.output[0], axes)
    return {0: _to_extremes(b, x, y, _kept(b, node, dy, axes), axes)}


@rule("GlobalMaxPool")
def _global_max_pool(b, node, dy, needs):
    x = node.input[0]
    return {0: _to_extremes(b, x, node.output[0], dy, _spatial(b, x))}


@rule("MaxPool")
def _max_pool(b, node, dy, needs):
    """Each window's gradient added at the flat position (within its sample and channel) of the
    element the forward pass picked; ScatterElements' 'add' sums overlapping windows."""
    attrs = attributes(node)
    if attrs.get("storage_order", 0):
        raise UnsupportedGradientError("MaxPool with column-major indices")
    x = node.input[0]
    indices = node.output[1] if len(node.output) > 1 and node.output[1] else None
    if indices is None:
        indices = b.extra_outputs.setdefault(node.name, {}).setdefault(
            1, b.fresh("max_pool_indices"))
    area = int(np.prod(b.shape(x)[2:]))
    rows = b.ints([0, 0, -1])
    within = b.add("Reshape", [b.add("Mod", [indices, b.ints(area)]), rows])
    flat = b.add("Reshape", [x, rows])
    grad = b.add("ScatterElements", [b.zeros_like(flat), within, b.add("Reshape", [dy, rows])],
                 axis=2, reduction="add")
    return {0: b.like(grad, x)}


@rule("AveragePool")
def _average_pool(b, node, dy, needs):
    """Each window's gradient, divided by the window's divisor, spread over the window (a
    ConvTranspose with a kernel of ones per channel). The divisors are onnxruntime's own:
    average-pooling ones gives (elements inside the image) / divisor per window, and the
    elements inside the image are counted here."""
    attrs = attributes(node)
    x = node.input[0]
    size, y_size = b.shape(x)[2:], b.shape(node.output[0])[2:]
    channels = b.shape(x)[1]
    kernel = list(attrs["kernel_shape"])
    spatial = len(kernel)
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    pads = conv_pads(attrs, size, kernel, strides, dilations)
    ones = b.constant(np.ones((1, 1, *size)))
    ratio = b.add(node.op_type, [ones], **attributes(node))
    inside = _inside(size, y_size, kernel, strides, dilations, pads[:spatial])
    share = b.add("Mul", [dy, b.add("Div", [ratio, b.constant(inside)])])
    weight = b.constant(np.ones((channels, 1, *kernel)))
    return {0: transposed_conv(b, share, weight, size, y_size, kernel, strides, dilations,
                               pads[:spatial], channels)}


def _inside(size, y_size, kernel, strides, dilations, begins) -> np.ndarray:
    """[1, 1, *y_size]: how many of each window's elements lie inside the input."""
    counts = np.ones([1, 1], np.float64)
    for x, y, k, s, d, begin in zip(size, y_size, kernel, strides, dilations, begins,
                                    strict=True):
        positions = np.arange(y)[:, None] * s - begin + np.arange(k)[None] * d
        per_axis = ((positions >= 0) & (positions < x)).sum(axis=1)
        counts = counts[..., None] * per_axis
    return counts
