"""HALCON layer kinds for ONNX operators.

'summary' shows every ONNX node with the lower-case layer kind HALCON would call it. The table
is a registry keyed by ONNX op type; ops that are not listed are shown as 'other'.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

_KINDS: dict[str, tuple[str, ...]] = {
    "convolution": ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"),
    "activation": (
        "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "Tanh",
        "HardSwish", "Clip", "Softplus", "Softsign", "Gelu", "Mish", "ThresholdedRelu", "Celu",
    ),
    "batchnorm": ("BatchNormalization",),
    "normalization": (
        "LayerNormalization", "InstanceNormalization", "GroupNormalization", "LRN",
        "LpNormalization",
    ),
    "pooling": (
        "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
        "GlobalLpPool", "ReduceMean", "ReduceMax",
    ),
    "dense": ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"),
    "softmax": ("Softmax", "LogSoftmax"),
    "elementwise": (
        "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "Sqrt", "Exp", "Log",
        "Neg", "Abs", "Reciprocal", "Erf", "Where", "Equal", "Greater", "Less", "Not", "And",
        "Or", "Floor", "Ceil", "Round", "Sign",
    ),
    "concat": ("Concat",),
    "reshape": (
        "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Expand", "Tile",
        "DepthToSpace", "SpaceToDepth",
    ),
    "slice": ("Slice", "Split", "Gather", "GatherElements", "GatherND"),
    "upsampling": ("Resize", "Upsample"),
    "padding": ("Pad",),
    "dropout": ("Dropout",),
    "identity": ("Identity", "Cast", "CastLike"),
    "shape": ("Shape", "Size", "ConstantOfShape", "Range", "Constant"),
}

LAYER_KIND: dict[str, str] = {op: kind for kind, ops in _KINDS.items() for op in ops}



def layer_kind(op_type: str) -> str:
    """HALCON's lower-case layer kind for an ONNX op type ('other' if unknown)."""
    return LAYER_KIND.get(op_type, "other")


def is_relu_clip(low: float | None) -> bool:
    """Whether a Clip with lower bound ``low`` (None: no lower bound) is a ReLU.

    Clip(0, x) is ReLU6 and its kin: HALCON's ReLU layer has an optional upper bound, and
    guided backpropagation guides it as a ReLU. The one place dlheatmap decides this: the
    graph analysis (fused activations), the ONNX gradient rules and the torch engine's
    guidable ReLUs all ask here.
    """
    return low is not None and float(low) == 0.0


def clip_bounds(
    node: onnx.NodeProto, constant: Callable[[str], np.ndarray | None]
) -> tuple[float | None, float | None]:
    """A Clip node's (min, max): attributes before opset 11, inputs since (None: absent).

    ``constant`` returns the value of a tensor that is a graph constant, or None.

    Raises
    ------
    ValueError
        A bound is computed in the graph rather than a constant.
    """
    attrs = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
    bounds: list[float | None] = [attrs.get("min"), attrs.get("max")]
    for position in (1, 2):
        name = node.input[position] if len(node.input) > position else ""
        if name:
            value = constant(name)
            if value is None or value.size != 1:
                raise ValueError(f"Clip {node.name!r} has a bound computed in the graph")
            bounds[position - 1] = float(value.reshape(()))
    return (None if bounds[0] is None else float(bounds[0]),
            None if bounds[1] is None else float(bounds[1]))
