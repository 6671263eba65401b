"""The Grad-CAM head as ONNX nodes: the map, its bilinear resize, HALCON's scaling and the
Guided Grad-CAM product.

Each step is the graph twin of a numpy function, with the same formula (spec/decisions.md),
so that onnxruntime returns finished heatmaps and no activation or gradient leaves it:

- :func:`grad_cam_map` is :class:`dlheatmap.methods.gradcam.GradCAM` (channel weights: the
  gradient's mean over height and width; the map: the weighted sum of channels, no ReLU);
- :func:`resize` is :func:`dlheatmap.methods.postprocess.upsample` (bilinear, half-pixel
  centres, edges clamped: torch's ``align_corners=False``);
- :func:`scaled` is :func:`dlheatmap.methods.postprocess.normalize` for the three
  normalisations of :data:`HEAD_DIVISORS` (HALCON's three scalings), chosen at run time by the
  weights of :func:`scaling_input`;
- :func:`guided_product` is :meth:`dlheatmap.methods.GuidedGradCAM.combine` (guided input
  gradient times the upsampled map with negatives set to 0, no rescaling).
"""

from __future__ import annotations

import numpy as np

from dlheatmap.graph.backward.builder import GradientBuilder

# The normalisations the head computes (dlheatmap.methods.normalize's names): weights (a, b, c)
# of the divisor max(a * maximum, b * minimum, c) of each resized map, the ReLU coming first in
# all three (the same as after a division by a positive number). 'max' divides by the maximum
# (HALCON's 'scale_after_relu'), 'abs_max_relu' by the maximum absolute value
# ('scale_before_relu'), 'relu' by 1 ('none').
HEAD_DIVISORS = {"max": (1, 0, 0), "abs_max_relu": (1, -1, 0), "relu": (0, 0, 1)}


def scaling_input(mode: str) -> np.ndarray:
    """The scaling input for the normalisation ``mode`` (a key of :data:`HEAD_DIVISORS`)."""
    return np.array(HEAD_DIVISORS[mode], np.float32)


def grad_cam_map(b: GradientBuilder, activation: str, gradient: str) -> str:
    """[N, 1, h, w] Grad-CAM maps from an N x C x h x w activation and its gradient."""
    _, channels, height, width = b.shape(activation)
    weights = b.reduce("ReduceMean", gradient, [2, 3])
    # one matrix product per sample: [1, C] x [C, h w]
    flat = b.add("Reshape", [activation, b.ints([0, channels, height * width])])
    row = b.add("Reshape", [weights, b.ints([0, 1, channels])])
    return b.add("Reshape", [b.add("MatMul", [row, flat]), b.ints([0, 1, height, width])])


def resize(b: GradientBuilder, maps: str, size: tuple[int, int]) -> str:
    """N x 1 x h x w maps resized bilinearly to N x 1 x height x width."""
    options = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    if b.opset >= 18:  # the sizes of the last two axes alone
        return b.add("Resize", [maps, "", "", b.ints(list(size))], axes=[2, 3], **options)
    sizes = b.add("Concat", [b.add("Slice", [b.add("Shape", [maps]), b.ints([0]), b.ints([2])]),
                             b.ints(list(size))], axis=0)
    return b.add("Resize", [maps, "", "", sizes], **options)


def scaled(b: GradientBuilder, resized: str, scaling: str) -> str:
    """Every scaling is a ReLU, then a division by a per-map divisor (see
    :func:`scaling_input`); a divisor that is not positive means an all-zero map, kept."""
    top = b.reduce("ReduceMax", resized, [2, 3])
    bottom = b.reduce("ReduceMin", resized, [2, 3])
    parts = {"num_outputs": 3} if b.opset >= 18 else {}  # required from opset 18 on
    weights = b.add_multi("Split", [scaling], 3, axis=0, **parts)
    divisor = b.add("Max", [b.add("Mul", [top, weights[0]]),
                            b.add("Mul", [bottom, weights[1]]), weights[2]])
    positive = b.add("Greater", [divisor, b.constant(0.0)])
    divisor = b.add("Where", [positive, divisor, b.constant(1.0)])
    return b.add("Div", [b.add("Relu", [resized]), divisor])


def guided_product(b: GradientBuilder, guided: str, resized: str, size: tuple[int, int]) -> str:
    """[N, H, W, C] guided input gradient (HALCON layout) times the [N, 1, H, W] resized map
    (``size``: H, W) with negatives set to 0."""
    cam = b.add("Relu", [b.add("Reshape", [resized, b.ints([0, *size, 1])])])
    return b.add("Mul", [guided, cam])
