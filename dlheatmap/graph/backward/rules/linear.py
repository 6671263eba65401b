"""Rules for dense and convolutional layers: the input's gradient only (never the weights').

The seed through a classifier's dense layer is a Gather of the chosen classes' weight rows
rather than a product with a one-hot matrix. A stride-1 convolution's input gradient is
itself a convolution (flipped, transposed weights), which onnxruntime runs at about the
forward layer's cost; other strides use ConvTranspose on the model's own weights.
"""

from __future__ import annotations

import numpy as np

from dlheatmap.graph.backward.builder import UnsupportedGradientError, attributes
from dlheatmap.graph.backward.registry import rule


@rule("Gemm", inputs=(0, 1, 2), computes=(0,))
def _gemm(b, node, dy, needs):
    attrs = attributes(node)
    alpha = attrs.get("alpha", 1.0)
    trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)
    chosen = b.seeds.get(dy)
    if chosen is not None and not trans_a:
        # the gradient of one class score: that class's row of the weight matrix
        if trans_b:
            grad = b.add("Gather", [node.input[1], chosen], axis=0)
        else:
            grad = b.transpose(b.add("Gather", [node.input[1], chosen], axis=1), [1, 0])
        return {0: b.scaled(grad, alpha)}
    # d/dA' of alpha * A' B' is alpha * dY B'^T: a Gemm on the model's own weights, transposed
    # by the flag, so that no second copy of them is made
    grad = b.add("Gemm", [dy, node.input[1]], alpha=float(alpha), transB=0 if trans_b else 1)
    return {0: b.transpose(grad, [1, 0]) if trans_a else grad}


@rule("MatMul", inputs=(0, 1))
def _matmul(b, node, dy, needs):
    a, w = node.input
    ranks = b.rank(a), b.rank(w)
    if min(ranks) < 2:
        raise UnsupportedGradientError("MatMul with a vector operand")
    grads = {}
    if 0 in needs:
        grads[0] = b.unbroadcast(_times_transposed(b, dy, w, ranks[1]), a, node.output[0])
    if 1 in needs:  # A^T dY
        swapped = b.transpose(a, _swap_last(ranks[0]))
        grads[1] = b.unbroadcast(b.add("MatMul", [swapped, dy]), w, node.output[0])
    return grads


def _times_transposed(b, dy: str, w: str, rank: int) -> str:
    """dY W^T, on the model's own weights where W is a constant matrix."""
    chosen = b.seeds.get(dy)
    if rank == 2 and b.initializer(w) is not None:
        if chosen is not None:
            return b.transpose(b.add("Gather", [w, chosen], axis=1), [1, 0])
        if len(b.shapes.get(dy, ())) == 2:
            return b.add("Gemm", [dy, w], transB=1)
    return b.add("MatMul", [dy, b.transpose(w, _swap_last(rank))])


def _swap_last(rank: int) -> list[int]:
    return [*range(rank - 2), rank - 1, rank - 2]


@rule("Conv", inputs=(0, 1, 2), computes=(0,))
def _conv(b, node, dy, needs):
    attrs = attributes(node)
    x = node.input[0]
    size, weight_shape = b.shape(x)[2:], b.shape(node.input[1])
    kernel = weight_shape[2:]
    spatial = len(kernel)
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    pads = conv_pads(attrs, size, kernel, strides, dilations)
    group = attrs.get("group", 1)
    y_size = b.shape(node.output[0])[2:]
    weight = b.initializer(node.input[1]) if b.flip_stride_one else None
    if weight is not None and (set(strides) == {1} or group > 1):
        # grouped (depthwise) strided convolutions too: onnxruntime's grouped ConvTranspose
        # is slow, a depthwise Conv over the zero-interleaved gradient is not
        upsampled = _interleave_zeros(b, dy, y_size, strides)
        return {0: _flipped_conv(b, upsampled, weight, group, size,
                                 [y * s for y, s in zip(y_size, strides, strict=True)],
                                 kernel, dilations, pads[:spatial])}
    return {0: transposed_conv(b, dy, node.input[1], size, y_size, kernel, strides, dilations,
                               pads[:spatial], group)}


def _interleave_zeros(b, dy: str, y_size, strides) -> str:
    """dy with s - 1 zeros after every element along each spatial axis (N x C x h s x w s):
    a nearest-neighbour upsampling times a constant 0/1 grid (onnxruntime upsamples by whole
    factors quickly; a Pad of a 6-D view or a DepthToSpace is several times slower)."""
    if set(strides) == {1}:
        return dy
    grid = np.zeros([y * s for y, s in zip(y_size, strides, strict=True)])
    grid[tuple(slice(None, None, s) for s in strides)] = 1.0
    scales = b.constant(np.array([1.0, 1.0, *strides]), np.float32)
    upsampled = b.add("Resize", [dy, "", scales], mode="nearest")
    return b.add("Mul", [upsampled, b.constant(grid)])


def _flipped_conv(b, u: str, weight: np.ndarray, group: int, size, u_size, kernel, dilations,
                  begins) -> str:
    """The stride-1 convolution's adjoint on ``u``: a Conv with flipped weights, padded (or
    cropped, where a pad would be negative) so that its output has the input's ``size``."""
    spatial = len(kernel)
    starts, stops, pads = [], [], [0] * 2 * spatial
    for axis, (x, n, k, d, begin) in enumerate(zip(size, u_size, kernel, dilations, begins,
                                                   strict=True)):
        front = (k - 1) * d - begin
        back = x - n - front + (k - 1) * d
        starts.append(max(-front, 0))
        stops.append(n - max(-back, 0))
        pads[axis], pads[spatial + axis] = max(front, 0), max(back, 0)
    if starts != [0] * spatial or stops != list(u_size):
        u = b.add("Slice", [u, b.ints(starts), b.ints(stops), b.ints(list(range(2, 2 + spatial)))])
    return b.add("Conv", [u, b.constant(_flip(weight, group))], pads=pads,
                 dilations=list(dilations), group=group, kernel_shape=list(kernel))


def _flip(weight: np.ndarray, group: int) -> np.ndarray:
    """The weights of the convolution that is a stride-1 convolution's adjoint: input and
    output channels swapped within each group, the kernel rotated by 180 degrees."""
    out_channels, per_group = weight.shape[:2]
    grouped = weight.reshape(group, out_channels // group, per_group, *weight.shape[2:])
    swapped = grouped.swapaxes(1, 2).reshape(group * per_group, out_channels // group,
                                             *weight.shape[2:])
    spatial = tuple(range(2, weight.ndim))
    return np.ascontiguousarray(np.flip(swapped, axis=spatial))


def transposed_conv(b, dy: str, weight: str, size, y_size, kernel, strides, dilations, begins,
                    group: int) -> str:
    """The adjoint of a convolution (weights ``weight``, [C_out, C_in / group, *kernel]) applied
    to ``dy``: a ConvTranspose whose output is cropped or extended to the input ``size``."""
    ends, extra = [], []
    for x, y, k, s, d, begin in zip(size, y_size, kernel, strides, dilations, begins,
                                    strict=True):
        overhang = (y - 1) * s + (k - 1) * d + 1 - begin - x  # > 0: crop, < 0: add zeros
        ends.append(max(overhang, 0))
        extra.append(max(-overhang, 0))
    if any(e >= max(s, d) for e, s, d in zip(extra, strides, dilations, strict=True)):
        raise UnsupportedGradientError("a convolution whose input size a transposed "
                                       "convolution misses")
    return b.add("ConvTranspose", [dy, weight], kernel_shape=list(kernel),
                 pads=list(begins) + ends, strides=list(strides), dilations=list(dilations),
                 group=group, output_padding=extra)


def conv_pads(attrs: dict, size, kernel, strides, dilations) -> list[int]:
    """Explicit begin and end pads of a convolution or pooling window, auto_pad resolved."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    spatial = len(kernel)
    if auto_pad in ("NOTSET", ""):
        return list(attrs.get("pads", [0] * 2 * spatial))
    if auto_pad == "VALID":
        return [0] * 2 * spatial
    begins, ends = [], []
    for x, k, s, d in zip(size, kernel, strides, dilations, strict=True):
        total = max((-(-x // s) - 1) * s + (k - 1) * d + 1 - x, 0)
        small = total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else total - small)
        ends.append(total - begins[-1])
    return begins + ends


@rule("ConvTranspose", inputs=(0, 1, 2), computes=(0,))
def _conv_transpose(b, node, dy, needs):
    """A ConvTranspose is the adjoint of the Conv with the same weights: its input gradient is
    that Conv, with the end pads less the output padding (cropping dy where that is negative)."""
    attrs = attributes(node)
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "") or "output_shape" in attrs:
        raise UnsupportedGradientError("ConvTranspose with auto_pad or output_shape")
    kernel = b.shape(node.input[1])[2:]
    spatial = len(kernel)
    strides = list(attrs.get("strides", [1] * spatial))
    pads = list(attrs.get("pads", [0] * 2 * spatial))
    ends = [end - extra for end, extra in zip(
        pads[spatial:], attrs.get("output_padding", [0] * spatial), strict=True)]
    if min(ends) < 0:
        size = b.shape(node.output[0])[2:]
        dy = b.add("Slice", [dy, b.ints([0] * spatial),
                             b.ints([s + min(e, 0) for s, e in zip(size, ends, strict=True)]),
                             b.ints(list(range(2, 2 + spatial)))])
        ends = [max(e, 0) for e in ends]
    return {0: b.add("Conv", [dy, node.input[1]], kernel_shape=list(kernel),
                     pads=pads[:spatial] + ends, strides=strides,
                     dilations=list(attrs.get("dilations", [1] * spatial)),
                     group=attrs.get("group", 1))}
