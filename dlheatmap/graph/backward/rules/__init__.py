"""The gradient rules, one short module per family; importing this package registers them."""

from dlheatmap.graph.backward.rules import (  # noqa: F401 (imported to register)
    activations,
    arithmetic,
    linear,
    normalisation,
    pooling,
    resize,
    shape,
)
