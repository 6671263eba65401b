"""Rules for normalisation layers at inference (statistics fixed, or per sample)."""

from __future__ import annotations

import numpy as np

from dlheatmap.graph.backward.builder import UnsupportedGradientError, attributes
from dlheatmap.graph.backward.registry import rule


@rule("BatchNormalization", inputs=(0, 1, 2, 3, 4), computes=(0,))
def _batch_normalization(b, node, dy, needs):
    attrs = attributes(node)
    if attrs.get("training_mode") or len(node.output) > 1:
        raise UnsupportedGradientError("BatchNormalization in training mode")
    scale, variance = (b.initializer(node.input[i]) for i in (1, 4))
    if scale is None or variance is None:
        raise UnsupportedGradientError("BatchNormalization with statistics computed in the graph")
    rank = b.rank(node.input[0])
    factor = scale / np.sqrt(variance + attrs.get("epsilon", 1e-5))
    return {0: b.add("Mul", [dy, b.constant(factor.reshape(-1, *[1] * (rank - 2)))])}


@rule("LayerNormalization", inputs=(0, 1, 2), computes=(0,))
def _layer_normalization(b, node, dy, needs):
    """dx = r (g - mean(g) - z mean(g z)) over the normalised axes, with z the normalised input,
    r the reciprocal standard deviation and g = dy * scale. The mean and r come from the
    forward node's optional outputs (added where the file does not ask for them)."""
    x = node.input[0]
    rank = b.rank(x)
    axes = list(range(attributes(node).get("axis", -1) % rank, rank))
    if 0 in axes:
        raise UnsupportedGradientError("LayerNormalization over the batch axis")
    # the statistics are in the stash type (float32 unless the file says otherwise)
    mean, inverse = (_statistic(b, node, position) for position in (1, 2))
    if b.dtype != np.float32:
        mean, inverse = b.cast(mean), b.cast(inverse)
    z = b.add("Mul", [b.add("Sub", [x, mean]), inverse])
    g = b.add("Mul", [dy, node.input[1]])
    centred = b.add("Sub", [g, b.reduce("ReduceMean", g, axes)])
    along = b.add("Mul", [z, b.reduce("ReduceMean", b.add("Mul", [g, z]), axes)])
    return {0: b.add("Mul", [inverse, b.add("Sub", [centred, along])])}


def _statistic(b, node, position: int) -> str:
    if len(node.output) > position and node.output[position]:
        return node.output[position]
    return b.extra_outputs.setdefault(node.name, {}).setdefault(
        position, b.fresh("layer_norm_statistic"))
