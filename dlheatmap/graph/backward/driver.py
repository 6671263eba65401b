"""The backward sweep: from a seed at the score tensor back to one tensor, rule by rule."""

from __future__ import annotations

from dlheatmap.graph.analysis import LayerInfo
from dlheatmap.graph.backward.builder import GradientBuilder, UnsupportedGradientError
from dlheatmap.graph.backward.registry import RULES, GradientRule
from dlheatmap.graph.subgraph import tail_nodes

# Ops whose outputs do not depend differentiably on their inputs (shapes, indices, masks):
# gradients never flow through them, so they need no rule.
NON_DIFFERENTIABLE = frozenset({
    "Shape", "Size", "ArgMax", "ArgMin", "NonZero", "Equal", "Greater", "GreaterOrEqual",
    "Less", "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "Sign", "Floor",
    "Ceil", "Round", "ConstantOfShape", "EyeLike", "RandomNormalLike", "RandomUniformLike",
    "Range", "OneHot",
})


def backward(b: GradientBuilder, seed: str, wrt: str, guided: bool = False) -> str:
    """Append the backward pass of d score / d ``wrt`` (``seed``: d score / d score tensor);
    returns the gradient tensor, shaped like ``wrt``. ``guided``: a guided-backpropagation
    chain (the rules read ``b.guided``).

    Raises
    ------
    UnsupportedGradientError
        An op on the path has no rule (or none for these inputs or attributes), or the score
        does not depend on ``wrt``.
    """
    info = b.info
    nodes, _ = tail_nodes(info, wrt, info.score_tensor)
    carrying = carrying_gradients(b, nodes, wrt)
    grads = {info.score_tensor: seed}
    b.guided = guided
    try:
        for layer in reversed(nodes):
            _step(b, layer, grads, carrying)
    finally:
        b.guided = False
    if wrt not in grads:
        raise UnsupportedGradientError("the score does not depend on the tensor")
    return b.exact(grads[wrt])


def _step(b: GradientBuilder, layer: LayerInfo, grads: dict[str, str], carrying: set[str]):
    dys = tuple(grads.get(out) for out in layer.outputs)
    if all(dy is None for dy in dys) or layer.op_type in NON_DIFFERENTIABLE:
        return
    rule_ = rule_for(b, layer)
    if not rule_.outputs and any(dy is not None for dy in dys[1:]):
        raise UnsupportedGradientError(f"{layer.op_type} with several differentiated outputs")
    needs = tuple(i for i, name in enumerate(layer.inputs)
                  if name in carrying and rule_.carries(i))
    if not rule_.handles(needs):
        raise UnsupportedGradientError(f"{layer.op_type} node {layer.name!r} with a gradient "
                                       f"through inputs {needs}")
    node = b.info.model.graph.node[layer.index]
    if rule_.outputs:
        dy = tuple(None if g is None else b.exact(g) for g in dys)
    else:
        dy = dys[0] if rule_.activation else b.exact(dys[0])
    for position, grad in rule_.apply(b, node, dy, needs).items():
        name = layer.inputs[position]
        if name in grads:
            grad = b.add("Add", [b.exact(grads[name]), b.exact(grad)])
        grads[name] = grad


def rule_for(b: GradientBuilder, layer: LayerInfo) -> GradientRule:
    node = b.info.model.graph.node[layer.index]
    found = RULES.lookup(layer.op_type, node.domain, b.opset)
    if found is None:
        raise UnsupportedGradientError(f"no gradient rule for {layer.op_type} (node "
                                       f"{layer.name!r}, opset {b.opset})")
    return found


def carrying_gradients(b: GradientBuilder, nodes: list[LayerInfo], wrt: str) -> set[str]:
    """Tensors that depend differentiably on ``wrt``; every node producing one must have a
    rule."""
    carrying = {wrt}
    for layer in nodes:
        if layer.op_type in NON_DIFFERENTIABLE or not any(
                name in carrying for name in layer.inputs):
            continue
        rule_ = rule_for(b, layer)
        if any(name in carrying and rule_.carries(position)
               for position, name in enumerate(layer.inputs)):
            carrying.update(out for out in layer.outputs if out)
    return carrying
