"""Rules for resizing (Resize; Upsample files are converted to Resize first).

Resizing the two spatial axes (nearest, linear or cubic, any coordinate mode) is separable
and linear: along each axis the output is a matrix A times the input, so the gradient is
A_h^T dy A_w. Each A^T is the node's own resize applied to an identity matrix, in the graph:
the same kernel as the forward pass, hence exactly its semantics, and constant, so that
onnxruntime folds it when the session is made.
"""

from __future__ import annotations

import numpy as np

from dlheatmap.graph.backward.builder import UnsupportedGradientError, attributes
from dlheatmap.graph.backward.registry import rule


@rule("Resize", inputs=(0,))
def _resize(b, node, dy, needs):
    x, y = b.shape(node.input[0]), b.shape(node.output[0])
    if len(x) != 4 or x[:2] != y[:2]:
        raise UnsupportedGradientError("Resize of other axes than the last two")
    attrs = attributes(node)
    if attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize" or "axes" in attrs:
        raise UnsupportedGradientError("Resize with a region of interest or axes")
    scales = b.constant_input(node, 2, "scales")
    if scales is not None and scales.size == 0:
        scales = None
    heights, widths = (_transposed_matrix(b, attrs, axis, x[axis], y[axis], scales)
                       for axis in (2, 3))
    rows = b.add("MatMul", [heights, dy])  # A_h^T dy
    return {0: b.add("MatMul", [rows, b.transpose(widths, [1, 0])])}  # ... A_w


def _transposed_matrix(b, attrs: dict, axis: int, size: int, new_size: int, scales) -> str:
    """A^T [size, new_size] for the resize along one axis: each row of the identity, resized."""
    identity = b.constant(np.eye(size).reshape(size, 1, size, 1))
    if scales is not None:
        inputs = [identity, "", b.constant(np.array([1, 1, scales[axis], 1]), np.float32)]
    else:
        inputs = [identity, "", "", b.ints([size, 1, new_size, 1])]
    resized = b.add("Resize", inputs, **attrs)
    return b.add("Reshape", [resized, b.ints([size, new_size])])
