"""Rules for ops that move, copy or select elements: the gradient goes back to where each
element came from (summed where one element was used several times)."""

from __future__ import annotations

import numpy as np

from dlheatmap.graph.backward.builder import UnsupportedGradientError, attributes
from dlheatmap.graph.backward.registry import rule

_FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


@rule("Identity", "Dropout")  # Dropout is the identity at inference
def _identity(b, node, dy, needs):
    if node.op_type == "Dropout" and (attributes(node).get("training_mode")
                                      or (len(node.input) > 2 and node.input[2])):
        raise UnsupportedGradientError("Dropout in training mode")
    return {0: dy}


@rule("Cast")
def _cast(b, node, dy, needs):
    if attributes(node)["to"] not in _FLOAT_TYPES:
        return {}  # an integer or boolean result carries no gradient
    return {0: dy if attributes(node)["to"] == b.elem_type else b.cast(dy)}


@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze", inputs=(0,))
def _reshape(b, node, dy, needs):
    return {0: b.like(dy, node.input[0])}


@rule("Transpose")
def _transpose(b, node, dy, needs):
    perm = attributes(node).get("perm")
    if perm is None:
        perm = list(reversed(range(b.rank(node.input[0]))))
    return {0: b.transpose(dy, list(np.argsort(perm)))}


@rule("Expand", inputs=(0,))
def _expand(b, node, dy, needs):
    return {0: b.unbroadcast(dy, node.input[0], node.output[0])}


@rule("Tile", inputs=(0,))
def _tile(b, node, dy, needs):
    """The output is the input repeated r_i times along each axis i: reshaped to
    (r_0, d_0, r_1, d_1, ...), summing over the r axes gives the input's gradient."""
    repeats = b.constant_input(node, 1, "repeats").astype(int).tolist()
    dims = b.shape(node.input[0])
    if repeats[0] != 1:
        raise UnsupportedGradientError("Tile along the batch axis")  # its reshape keeps axis 0
    shape, summed = [0], []
    for axis in range(1, len(dims)):
        summed.append(len(shape))
        shape += [repeats[axis], dims[axis]]
    grad = b.reduce("ReduceSum", b.add("Reshape", [dy, b.ints(shape)]), summed)
    return {0: b.like(grad, node.input[0])}


@rule("Concat", inputs=None)
def _concat(b, node, dy, needs):
    axis = attributes(node)["axis"] % b.rank(node.output[0])
    b.refuse_batch_axis(axis, "Concat")
    grads, start = {}, 0
    for position, tensor in enumerate(node.input):
        stop = start + b.shape(tensor)[axis]
        if position in needs:
            grads[position] = b.add("Slice", [dy, b.ints([start]), b.ints([stop]),
                                              b.ints([axis])])
        start = stop
    return grads


@rule("Split", outputs=True)
def _split(b, node, dys, needs):
    axis = attributes(node).get("axis", 0) % b.rank(node.input[0])
    b.refuse_batch_axis(axis, "Split")
    parts = [dy if dy is not None else b.zeros_like(out) for dy, out in zip(
        dys, node.output, strict=True)]
    return {0: b.add("Concat", [b.exact(part) for part in parts], axis=axis)}


@rule("Slice", inputs=(0,))
def _slice(b, node, dy, needs):
    """Slice with steps of 1 takes a box out of its input; its gradient pads the box back with
    zeros. The box's corners follow the slice's (possibly computed) starts and ends,
    normalised as ONNX does: negative values count from the end, then clamped to the axis."""
    x = node.input[0]
    rank = b.rank(x)
    steps = b.constant_input(node, 4, "steps")
    if steps is not None and (steps != 1).any():
        raise UnsupportedGradientError("Slice with steps other than 1")
    count = b.shape(node.input[1])[0]
    axes = b.constant_input(node, 3, "axes")
    axes = list(range(count)) if axes is None else [int(a) % rank for a in axes]
    if 0 in axes:
        b.refuse_batch_axis(0, "Slice")
    dims = b.add("Gather", [b.add("Shape", [x]), b.ints(axes)], axis=0)
    begin, end = (_clamped(b, node.input[i], dims) for i in (1, 2))
    end = b.add("Max", [end, begin])  # an empty slice
    pads = b.add("ScatterElements", [b.ints(np.zeros(2 * rank)),
                                     b.ints(axes + [rank + a for a in axes]),
                                     b.add("Concat", [begin, b.add("Sub", [dims, end])], axis=0)],
                 axis=0)
    return {0: b.add("Pad", [dy, pads])}


def _clamped(b, bound: str, dims: str) -> str:
    bound = b.add("Cast", [bound], to=7)  # int64
    counted = b.add("Where", [b.add("Less", [bound, b.ints(0)]),
                              b.add("Add", [bound, dims]), bound])
    return b.add("Min", [b.add("Max", [counted, b.ints(0)]), dims])


@rule("Pad", inputs=(0,))
def _pad(b, node, dy, needs):
    """A constant Pad adds borders (or, with negative pads, crops); padding its gradient by
    the negated pads takes them off again."""
    if attributes(node).get("mode", "constant") != "constant":
        raise UnsupportedGradientError("Pad in reflect, edge or wrap mode")
    inputs = [dy, b.add("Neg", [node.input[1]])]
    if len(node.input) > 3 and node.input[3]:  # axes (opset 18); no constant value
        inputs += ["", node.input[3]]
    return {0: b.add("Pad", inputs)}


@rule("Gather", inputs=(0,))
def _gather(b, node, dy, needs):
    """Gather picks slices along an axis; the gradient adds each picked slice's gradient
    back at its index (ScatterND with reduction 'add': an index may repeat)."""
    x, indices = node.input[0], node.input[1]
    rank = b.rank(x)
    axis = attributes(node).get("axis", 0) % rank
    b.refuse_batch_axis(axis, "Gather")
    index_rank = len(b.shape(indices))
    count = int(np.prod(b.shape(indices), dtype=np.int64))
    # the gathered axes of dy first, then x's other axes in order; x with the axis first
    gathered = list(range(axis, axis + index_rank))
    others = [a for a in range(rank + index_rank - 1) if a not in gathered]
    updates = b.add("Reshape", [b.transpose(dy, gathered + others), b.ints([count, -1])])
    front = [axis] + [a for a in range(rank) if a != axis]
    moved = b.transpose(x, front)
    size = b.shape(x)[axis]
    flat = b.add("Reshape", [b.add("Cast", [indices], to=7), b.ints([count, 1])])
    flat = b.add("Where", [b.add("Less", [flat, b.ints(0)]), b.add("Add", [flat, b.ints(size)]),
                           flat])
    zeros = b.zeros_like(b.add("Reshape", [moved, b.ints([size, -1])]))
    grad = b.add("ScatterND", [zeros, flat, updates], reduction="add")
    grad = b.add("Reshape", [grad, b.add("Shape", [moved])])
    return {0: b.transpose(grad, list(np.argsort(front)))}


@rule("GatherND", inputs=(0,))
def _gather_nd(b, node, dy, needs):
    """GatherND picks elements or slices at index tuples; with batch_dims 0 its adjoint is
    ScatterND of dy into zeros at the same tuples, repeated tuples adding up."""
    if attributes(node).get("batch_dims", 0):
        raise UnsupportedGradientError("GatherND with batch_dims")
    x = node.input[0]
    return {0: b.add("ScatterND", [b.zeros_like(x), node.input[1], dy], reduction="add")}
