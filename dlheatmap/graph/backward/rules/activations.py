"""Rules for element-wise activations and the softmax family.

At a kink the derivative is taken as torch takes it: 0 at a ReLU's 0 and at clip bounds, the
inner slope at HardSwish's +-3, 0 for Abs at 0. In a guided chain (``b.guided``), ReLU and
Clip(0, x) pass back only positive gradients (guided backpropagation); every other activation
is differentiated as usual, as the torch engine does.
"""

from __future__ import annotations

import math

from dlheatmap.graph.backward.builder import UnsupportedGradientError, attributes
from dlheatmap.graph.backward.registry import rule
from dlheatmap.graph.layers import clip_bounds, is_relu_clip


def _times(b, dy: str, slope: str) -> str:
    return b.add("Mul", [dy, slope])


def _guide(b, dy: str) -> str:
    """Guided backpropagation keeps the positive part of the gradient at a ReLU's output."""
    return b.add("Relu", [dy]) if b.guided else dy


@rule("Relu", activation=True)
def _relu(b, node, dy, needs):
    return {0: b.masked(_guide(b, dy), b.compare("Greater", node.output[0], 0.0))}


@rule("Clip", inputs=(0, 1, 2), computes=(0,), activation=True)
def _clip(b, node, dy, needs):
    try:
        low, high = clip_bounds(node, b.initializer)
    except ValueError as exc:
        raise UnsupportedGradientError(str(exc)) from exc
    x = node.input[0]
    inside = None
    if low is not None:
        inside = b.compare("Greater", x, low)
    if high is not None:
        below = b.compare("Less", x, high)
        inside = below if inside is None else b.add("And", [inside, below])
    if is_relu_clip(low):
        dy = _guide(b, dy)
    return {0: dy if inside is None else b.masked(dy, inside)}


@rule("LeakyRelu", activation=True)
def _leaky_relu(b, node, dy, needs):
    alpha = attributes(node).get("alpha", 0.01)
    positive = b.mask(b.compare("Greater", node.input[0], 0.0))
    slope = b.add("Add", [b.scaled(positive, 1.0 - alpha), b.constant(alpha)])
    return {0: _times(b, dy, slope)}


@rule("HardSigmoid", activation=True)
def _hard_sigmoid(b, node, dy, needs):
    attrs = attributes(node)
    alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
    z = b.add("Add", [b.scaled(node.input[0], alpha), b.constant(beta)])
    inside = b.add("And", [b.compare("Greater", z, 0.0), b.compare("Less", z, 1.0)])
    return {0: b.masked(b.scaled(dy, alpha), inside)}


@rule("HardSwish", activation=True)
def _hard_swish(b, node, dy, needs):
    # d/dx x * hardsigmoid(x) = hardsigmoid(x) + x / 6 where |x| <= 3: 0 below -3, x / 3 + 1/2
    # up to 3 (both ends included, as torch has it), 1 above
    x = node.input[0]
    inner = b.mask(b.compare("LessOrEqual", b.add("Abs", [x]), 3.0))
    ramp = b.add("Mul", [b.scaled(x, 1 / 6), inner])
    slope = b.add("Add", [b.add("HardSigmoid", [x], alpha=1 / 6, beta=0.5), ramp])
    return {0: _times(b, dy, slope)}


@rule("Sigmoid", activation=True)
def _sigmoid(b, node, dy, needs):
    y = node.output[0]
    return {0: _times(b, dy, b.add("Mul", [y, b.add("Sub", [b.constant(1.0), y])]))}


@rule("Tanh", activation=True)
def _tanh(b, node, dy, needs):
    y = node.output[0]
    return {0: _times(b, dy, b.add("Sub", [b.constant(1.0), b.add("Mul", [y, y])]))}


@rule("Softplus", activation=True)
def _softplus(b, node, dy, needs):
    return {0: _times(b, dy, b.add("Sigmoid", [node.input[0]]))}


@rule("Mish", activation=True)
def _mish(b, node, dy, needs):
    # x tanh(softplus(x)): tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2)
    x = node.input[0]
    t = b.add("Tanh", [b.add("Softplus", [x])])
    second = b.add("Mul", [b.add("Mul", [x, b.add("Sigmoid", [x])]),
                           b.add("Sub", [b.constant(1.0), b.add("Mul", [t, t])])])
    return {0: _times(b, dy, b.add("Add", [t, second]))}


@rule("Erf", activation=True)
def _erf(b, node, dy, needs):
    x = node.input[0]
    bell = b.add("Exp", [b.add("Neg", [b.add("Mul", [x, x])])])
    return {0: _times(b, dy, b.scaled(bell, 2 / math.sqrt(math.pi)))}


@rule("Gelu", activation=True)
def _gelu(b, node, dy, needs):
    x = node.input[0]
    if attributes(node).get("approximate", "none") == "tanh":
        # 0.5 x (1 + tanh(u)), u = sqrt(2 / pi) (x + 0.044715 x^3)
        k, c = math.sqrt(2 / math.pi), 0.044715
        square = b.add("Mul", [x, x])
        u = b.scaled(b.add("Mul", [x, b.add("Add", [b.constant(1.0), b.scaled(square, c)])]), k)
        t = b.add("Tanh", [u])
        du = b.scaled(b.add("Add", [b.constant(1.0), b.scaled(square, 3 * c)]), k)
        inner = b.add("Mul", [b.add("Mul", [x, b.add("Sub", [b.constant(1.0),
                                                             b.add("Mul", [t, t])])]), du])
        slope = b.scaled(b.add("Add", [b.add("Add", [b.constant(1.0), t]), inner]), 0.5)
        return {0: _times(b, dy, slope)}
    # Phi(x) + x phi(x)
    cdf = b.scaled(b.add("Add", [b.constant(1.0), b.add("Erf", [b.scaled(x, 1 / math.sqrt(2))])]),
                   0.5)
    pdf = b.scaled(b.add("Exp", [b.scaled(b.add("Mul", [x, x]), -0.5)]), 1 / math.sqrt(2 * math.pi))
    return {0: _times(b, dy, b.add("Add", [cdf, b.add("Mul", [x, pdf])]))}


@rule("Exp", activation=True)
def _exp(b, node, dy, needs):
    return {0: _times(b, dy, node.output[0])}


@rule("Log")
def _log(b, node, dy, needs):
    return {0: b.add("Div", [dy, node.input[0]])}


@rule("Sqrt")
def _sqrt(b, node, dy, needs):
    return {0: b.add("Div", [dy, b.scaled(node.output[0], 2.0)])}


@rule("Reciprocal", activation=True)
def _reciprocal(b, node, dy, needs):
    y = node.output[0]
    return {0: _times(b, dy, b.add("Neg", [b.add("Mul", [y, y])]))}


@rule("Neg")
def _neg(b, node, dy, needs):
    return {0: b.add("Neg", [dy])}


@rule("Abs", activation=True)
def _abs(b, node, dy, needs):
    return {0: _times(b, dy, b.add("Sign", [node.input[0]]))}


@rule("Softmax", since=13)
def _softmax(b, node, dy, needs):
    # y (dy - sum(dy y)) along the axis
    y, axis = node.output[0], attributes(node).get("axis", -1) % b.rank(node.output[0])
    weighted = b.reduce("ReduceSum", b.add("Mul", [dy, y]), [axis])
    return {0: b.add("Mul", [y, b.add("Sub", [dy, weighted])])}


@rule("LogSoftmax", since=13)
def _log_softmax(b, node, dy, needs):
    # dy - softmax(x) sum(dy) along the axis
    y, axis = node.output[0], attributes(node).get("axis", -1) % b.rank(node.output[0])
    total = b.reduce("ReduceSum", dy, [axis])
    return {0: b.add("Sub", [dy, b.add("Mul", [b.add("Exp", [y]), total])])}
