"""The gradient-rule registry, keyed by (domain, op type) and, where semantics differ, opset.

Every rule is registered with the :func:`rule` decorator on a function
``fn(builder, node, dy, needs) -> {input position: gradient tensor}``: ``dy`` is the gradient
arriving at the node's first output (a tuple over all outputs for a rule registered with
``outputs=True``), ``needs`` the input positions that need a gradient. Registering the same
key twice is an error, so two modules cannot silently replace each other's rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import onnx

from dlheatmap.graph.backward.builder import GradientBuilder

Rule = Callable[[GradientBuilder, onnx.NodeProto, object, tuple[int, ...]], dict[int, str]]

DEFAULT_DOMAIN = ""  # ONNX's own operators ('ai.onnx' is the same domain)


@dataclass(frozen=True)
class GradientRule:
    """How to differentiate one op.

    ``inputs`` are the positions through which gradients flow (shape inputs, for example,
    carry none; None: all of them); ``computes`` those of them ``apply`` can differentiate (a
    weight that depends on the image has no rule here; None: all of ``inputs``).
    ``activation``: the rule multiplies the gradient by a factor shaped like its input, so it
    may receive a gradient that still has to be spread over that shape (pooling's
    N x C x 1 x 1): the product spreads it, and no separate pass is needed. ``outputs``:
    ``apply`` receives the gradients of all outputs (None where an output has none).
    """

    apply: Rule
    inputs: tuple[int, ...] | None = (0,)
    computes: tuple[int, ...] | None = None
    activation: bool = False
    outputs: bool = False

    def handles(self, positions: tuple[int, ...]) -> bool:
        allowed = self.inputs if self.computes is None else self.computes
        return allowed is None or set(positions) <= set(allowed)

    def carries(self, position: int) -> bool:
        return self.inputs is None or position in self.inputs


class Registry:
    """Rules by (domain, op type, first opset they apply to)."""

    def __init__(self) -> None:
        self._rules: dict[tuple[str, str], dict[int, GradientRule]] = {}

    def register(self, op_type: str, gradient_rule: GradientRule, domain: str = DEFAULT_DOMAIN,
                 since: int = 1) -> None:
        versions = self._rules.setdefault((_domain(domain), op_type), {})
        if since in versions:
            raise ValueError(f"a gradient rule for {domain or 'ai.onnx'}:{op_type} "
                             f"(from opset {since}) is already registered")
        versions[since] = gradient_rule

    def lookup(self, op_type: str, domain: str = DEFAULT_DOMAIN,
               opset: int = 10**6) -> GradientRule | None:
        """The rule for an op at ``opset`` (the one registered for the latest opset not
        after it), or None."""
        versions = self._rules.get((_domain(domain), op_type), {})
        applicable = [since for since in versions if since <= opset]
        return versions[max(applicable)] if applicable else None

    def keys(self) -> Iterator[tuple[str, str, int]]:
        """(domain, op type, since) of every registered rule."""
        for (domain, op_type), versions in self._rules.items():
            for since in versions:
                yield domain, op_type, since

    def op_types(self) -> set[str]:
        return {op_type for _, op_type in self._rules}

    def __contains__(self, op_type: str) -> bool:
        return (DEFAULT_DOMAIN, op_type) in self._rules


def _domain(domain: str) -> str:
    return DEFAULT_DOMAIN if domain == "ai.onnx" else domain


RULES = Registry()


def rule(
    *op_types: str,
    inputs: tuple[int, ...] | None = (0,),
    computes: tuple[int, ...] | None = None,
    activation: bool = False,
    outputs: bool = False,
    domain: str = DEFAULT_DOMAIN,
    since: int = 1,
    registry: Registry = RULES,
) -> Callable[[Rule], Rule]:
    """Register the decorated function as the gradient rule of ``op_types`` (see
    :class:`GradientRule` for the options); refuses a key that already has a rule."""
    def register(fn: Rule) -> Rule:
        for op_type in op_types:
            registry.register(op_type, GradientRule(fn, inputs, computes, activation, outputs),
                              domain, since)
        return fn

    return register
