"""Rules for broadcasting arithmetic: each operand that depends on the image gets its share
(the product rule where both do: squeeze-excitation, attention), summed back over the axes it
was broadcast along."""

from __future__ import annotations

from dlheatmap.graph.backward.builder import UnsupportedGradientError
from dlheatmap.graph.backward.registry import rule


def _back(b, node, grad: str, position: int) -> str:
    return b.unbroadcast(grad, node.input[position], node.output[0])


@rule("Add", "Sub", inputs=(0, 1))
def _add(b, node, dy, needs):
    return {position: _back(b, node, b.add("Neg", [dy]) if node.op_type == "Sub" and position
                            else dy, position)
            for position in needs}


@rule("Sum", inputs=None)
def _sum(b, node, dy, needs):
    return {position: _back(b, node, dy, position) for position in needs}


@rule("Mean", inputs=None)
def _mean(b, node, dy, needs):
    share = b.scaled(dy, 1.0 / len(node.input))
    return {position: _back(b, node, share, position) for position in needs}


@rule("Mul", inputs=(0, 1))
def _mul(b, node, dy, needs):
    return {position: _back(b, node, b.add("Mul", [dy, node.input[1 - position]]), position)
            for position in needs}


@rule("Div", inputs=(0, 1))
def _div(b, node, dy, needs):
    # d(a / b) = da / b - y db / b
    a_share = b.add("Div", [dy, node.input[1]])
    grads = {}
    if 0 in needs:
        grads[0] = _back(b, node, a_share, 0)
    if 1 in needs:
        grads[1] = _back(b, node, b.add("Neg", [b.add("Mul", [a_share, node.output[0]])]), 1)
    return grads


@rule("Pow", inputs=(0, 1), computes=(0,))
def _pow(b, node, dy, needs):
    exponent = b.initializer(node.input[1])
    if exponent is None:
        raise UnsupportedGradientError("Pow with an exponent computed in the graph")
    x = node.input[0]
    if exponent.size == 1 and float(exponent.reshape(())) == 2.0:
        slope = b.scaled(x, 2.0)
    else:
        e = b.cast(node.input[1])
        slope = b.add("Mul", [e, b.add("Pow", [x, b.add("Sub", [e, b.constant(1.0)])])])
    return {0: _back(b, node, b.add("Mul", [dy, slope]), 0)}


@rule("Max", "Min", inputs=None)
def _extremum(b, node, dy, needs):
    """The gradient goes to the operands equal to the result, split evenly among ties (as
    torch's maximum and minimum split it between two equal operands)."""
    y = node.output[0]
    hits = [b.mask(b.add("Equal", [x, y])) for x in node.input]
    count = hits[0]
    for hit in hits[1:]:
        count = b.add("Add", [count, hit])
    share = b.add("Div", [dy, count])
    return {position: _back(b, node, b.add("Mul", [share, hits[position]]), position)
            for position in needs}
