"""HALCON layer kinds for ONNX operators.

'summary' shows every ONNX node with the lower-case layer kind HALCON would call it. The table
is a registry keyed by ONNX op type; ops that are not listed are shown as 'other'.
"""

from __future__ import annotations

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

# Ops whose gradient masks like a ReLU and which guided backpropagation guides.
RELU_LIKE_OPS = frozenset({"Relu", "Clip"})


def layer_kind(op_type: str) -> str:
    """HALCON's lower-case layer kind for an ONNX op type ('other' if unknown)."""
    return LAYER_KIND.get(op_type, "other")
