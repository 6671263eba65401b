"""Hand-built ONNX graphs for the tests: a small classifier around the op under test."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHANNELS, SIZE, CLASSES = 4, 8, 5


class Graph:
    """Builds image -> Conv -> Relu -> Conv ('target') -> tail -> head -> scores."""

    def __init__(self, opset: int = 17, seed: int = 0, dtype=np.float32):
        self.opset = opset
        self.dtype = dtype  # of the image, the weights and every float constant
        self.rng = np.random.default_rng(seed)  # weights: the same seed gives the same ones
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, value, dtype=None) -> str:
        self._count += 1
        name = f"c{self._count}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype or self.dtype),
                                                         name))
        return name

    def weight(self, *shape: int, scale: float = 0.5) -> str:
        return self.const(self.rng.normal(0, scale, shape))

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        self._count += 1
        out = f"t{self._count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self._count}",
                                           **attrs))
        return out

    def body(self) -> tuple[str, str]:
        """The layers before the tail: returns (skip tensor, target activation)."""
        first = self.node("Conv", ["image", self.weight(CHANNELS, 3, 3, 3)], pads=[1] * 4)
        skip = self.node("Relu", [first])
        self.nodes.append(helper.make_node(
            "Conv", [skip, self.weight(CHANNELS, CHANNELS, 3, 3), self.weight(CHANNELS)],
            ["act"], name="target", pads=[1] * 4))
        return skip, "act"

    def pooled_head(self, features: str, channels: int) -> str:
        pooled = self.node("Flatten", [self.node("GlobalAveragePool", [features])])
        return self.node("Gemm", [pooled, self.weight(CLASSES, channels),
                                  self.weight(CLASSES)], transB=1)

    def _score_shape(self) -> list:
        last = self.nodes[-1].op_type
        return ["N", CLASSES, 1, 1] if last == "Conv" else ["N", CLASSES]

    def model(self, scores: str) -> onnx.ModelProto:
        for node in self.nodes:
            for names in (node.input, node.output):
                for i, name in enumerate(names):
                    if name == scores:
                        names[i] = "scores"
        graph = helper.make_graph(
            self.nodes, "tail-test",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
            [helper.make_tensor_value_info("scores", TensorProto.FLOAT, self._score_shape())],
            self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        return model


def classifier(body, image_shape: tuple[int, ...], opset: int = 17, dtype=np.float32,
               seed: int = 0, classes: int = CLASSES) -> onnx.ModelProto:
    """image [N, *image_shape[1:]] -> ``body(g, 'image')`` -> Flatten -> Gemm -> scores [N, K]:
    a classifier whose gradients pass through the ops ``body`` writes."""
    g = Graph(opset, seed, dtype)
    features = g.node("Flatten", [body(g, "image")], axis=1)
    g.nodes.append(helper.make_node("Gemm", [features, "head_weight", g.weight(classes)],
                                    ["scores"], transB=1, name="head"))
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        g.nodes, "rule-test",
        [helper.make_tensor_value_info("image", elem, ["N", *image_shape[1:]])],
        [helper.make_tensor_value_info("scores", elem, ["N", classes])], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(_with_batch(model, image_shape))
    flat = next(v for v in inferred.graph.value_info if v.name == features)
    features_width = flat.type.tensor_type.shape.dim[1].dim_value
    model.graph.initializer.append(numpy_helper.from_array(
        g.rng.normal(0, 0.5, (classes, features_width)).astype(dtype), "head_weight"))
    return model


def _with_batch(model: onnx.ModelProto, image_shape) -> onnx.ModelProto:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for dim, value in zip(fixed.graph.input[0].type.tensor_type.shape.dim, image_shape,
                          strict=True):
        dim.Clear()
        dim.dim_value = value
    return fixed
