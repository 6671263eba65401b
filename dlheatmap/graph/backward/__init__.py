"""Backward passes as ONNX nodes, so that onnxruntime computes gradients with the forward pass.

- :mod:`.builder`: :class:`GradientBuilder`, what every rule writes nodes with;
- :mod:`.registry`: :class:`GradientRule` and the registry keyed by (domain, op type, opset),
  filled by the :func:`rule` decorator in :mod:`.rules` (one short module per op family);
- :mod:`.driver`: the backward sweep from the score to a tensor;
- :mod:`.head`: the Grad-CAM head (map, resize, scaling, guided product), twin of
  :mod:`dlheatmap.methods`' numpy functions;
- :mod:`.model`: :func:`gradient_model`, the classifier extended as a
  :class:`GradientRequest` asks (inputs and outputs documented there), and
  :func:`onnxruntime_coverage`.

At the points where a derivative is undefined (a ReLU at 0, a clip bound) the rules take the
gradient as torch does (0 for both).
"""

from dlheatmap.graph.backward.builder import GradientBuilder, UnsupportedGradientError
from dlheatmap.graph.backward.driver import NON_DIFFERENTIABLE, backward
from dlheatmap.graph.backward.head import HEAD_DIVISORS, scaling_input
from dlheatmap.graph.backward.model import (
    COVERED_METHODS,
    GRADIENT_OPSET,
    HEATMAPS_OUTPUT,
    IMAGE_INPUT,
    INPUT_GRADIENTS_OUTPUT,
    LAYER_GRADIENTS_OUTPUT,
    MAPS_OUTPUT,
    PROBABILITIES_OUTPUT,
    SCALING_INPUT,
    TARGETS_INPUT,
    TARGETS_OUTPUT,
    Coverage,
    GradientRequest,
    build_gradient_model,
    gradient_model,
    onnxruntime_coverage,
)
from dlheatmap.graph.backward.registry import RULES, GradientRule, Registry, rule

__all__ = [
    "COVERED_METHODS",
    "GRADIENT_OPSET",
    "HEAD_DIVISORS",
    "HEATMAPS_OUTPUT",
    "IMAGE_INPUT",
    "INPUT_GRADIENTS_OUTPUT",
    "LAYER_GRADIENTS_OUTPUT",
    "MAPS_OUTPUT",
    "NON_DIFFERENTIABLE",
    "PROBABILITIES_OUTPUT",
    "RULES",
    "SCALING_INPUT",
    "TARGETS_INPUT",
    "TARGETS_OUTPUT",
    "Coverage",
    "GradientBuilder",
    "GradientRequest",
    "GradientRule",
    "Registry",
    "UnsupportedGradientError",
    "backward",
    "build_gradient_model",
    "gradient_model",
    "onnxruntime_coverage",
    "rule",
    "scaling_input",
]
