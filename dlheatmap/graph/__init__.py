"""Model loading and graph handling: everything that needs only ``onnx``.

``load_model`` reads and normalises an ONNX file; ``GraphInfo`` describes what dlheatmap needs
to know about the graph (input layout, classification output, layers and their shapes);
``extract_subgraph`` cuts the part of a graph that lies between two sets of tensors.
"""

from dlheatmap.graph.analysis import (
    GraphInfo,
    ImageInput,
    LayerInfo,
    analyse,
    infer_shapes,
    undefined_ops,
)
from dlheatmap.graph.loading import load_model, load_proto, normalise
from dlheatmap.graph.precision import (
    QDQ_OPS,
    float32_copy,
    fold_constant_dequantize,
    graph_precision,
    has_float16,
)
from dlheatmap.graph.subgraph import extract_subgraph, tail_nodes, with_extra_outputs

__all__ = [
    "QDQ_OPS",
    "GraphInfo",
    "ImageInput",
    "LayerInfo",
    "analyse",
    "extract_subgraph",
    "float32_copy",
    "fold_constant_dequantize",
    "graph_precision",
    "has_float16",
    "infer_shapes",
    "load_model",
    "load_proto",
    "normalise",
    "tail_nodes",
    "undefined_ops",
    "with_extra_outputs",
]
