"""Hand-built ONNX graphs (onnx.helper) for the tests: what exported models never contain.

- :func:`tensor`, :func:`model` (:func:`model_of`), :func:`initializers`, :func:`save`,
  :func:`weight`: the pieces every hand-written graph needs (value infos, a model at one
  opset, float32 initializers, random weights).
- :class:`Graph`: image -> Conv -> Relu -> Conv ('target') -> a tail under test -> a head,
  built node by node (the gradient-rule tests).
- :func:`classifier`: image -> any body -> Flatten -> Gemm, in any opset and float type.
- :func:`two_conv_classifier`: conv1 -> activation -> conv2 -> Relu -> GAP -> Gemm with weights
  known by name, so that a torch truth can be written out on the same weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


# --- pieces -----------------------------------------------------------------------------------

def tensor(name: str, dims, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A graph input or output: ``dims`` may hold numbers, names (symbolic) or be None."""
    return helper.make_tensor_value_info(name, elem, dims)


def model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
          outputs: Sequence[onnx.ValueInfoProto], inits: Iterable[onnx.TensorProto] = (),
          opset: int = OPSET, domains: Sequence[onnx.OperatorSetIdProto] = (),
          name: str = "test") -> onnx.ModelProto:
    """A model of one graph at ``opset`` (IR version 8, or 3 before opset 9)."""
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), list(inits))
    return model_of(graph, opset, domains)


def model_of(graph: onnx.GraphProto, opset: int = OPSET,
             domains: Sequence[onnx.OperatorSetIdProto] = ()) -> onnx.ModelProto:
    """``graph`` as a model at ``opset`` (IR version 8, or 3 before opset 9)."""
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *domains])
    proto.ir_version = 8 if opset >= 9 else 3
    return proto


def initializers(arrays: dict[str, np.ndarray]) -> list[onnx.TensorProto]:
    """Initializers by name; floating-point arrays are stored as float32."""
    def stored(value) -> np.ndarray:
        value = np.asarray(value)
        return value.astype(np.float32) if value.dtype.kind == "f" else value

    return [numpy_helper.from_array(stored(value), name) for name, value in arrays.items()]


def save(proto: onnx.ModelProto, path: Path, check: bool = False) -> Path:
    """Write ``proto`` to ``path`` (after onnx.checker when ``check``); returns ``path``."""
    if check:
        onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def weight(name: str, *shape: int, seed: int = 0) -> onnx.TensorProto:
    """A float32 initializer of normal values (sd 0.4), the same for the same name and seed."""
    rng = np.random.default_rng(seed + len(name))
    return numpy_helper.from_array(rng.normal(0, 0.4, shape).astype(np.float32), name)


# --- a graph built node by node ----------------------------------------------------------------

class Graph:
    """Builds image -> Conv -> Relu -> Conv ('target') -> tail -> head -> scores."""

    CHANNELS, SIZE, CLASSES = 4, 8, 5  # the target's channels, the image side, the classes

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
        channels = self.CHANNELS
        first = self.node("Conv", ["image", self.weight(channels, 3, 3, 3)], pads=[1] * 4)
        skip = self.node("Relu", [first])
        self.nodes.append(helper.make_node(
            "Conv", [skip, self.weight(channels, channels, 3, 3), self.weight(channels)],
            ["act"], name="target", pads=[1] * 4))
        return skip, "act"

    def pooled_head(self, features: str, channels: int) -> str:
        pooled = self.node("Flatten", [self.node("GlobalAveragePool", [features])])
        return self.node("Gemm", [pooled, self.weight(self.CLASSES, channels),
                                  self.weight(self.CLASSES)], transB=1)

    def _score_shape(self) -> list:
        last = self.nodes[-1].op_type
        return ["N", self.CLASSES, 1, 1] if last == "Conv" else ["N", self.CLASSES]

    def model(self, scores: str) -> onnx.ModelProto:
        for node in self.nodes:
            for names in (node.input, node.output):
                for i, name in enumerate(names):
                    if name == scores:
                        names[i] = "scores"
        return model(self.nodes, [tensor("image", ["N", 3, self.SIZE, self.SIZE])],
                     [tensor("scores", self._score_shape())], self.initializers,
                     self.opset, name="tail-test")


# --- a two-convolution classifier with named weights ----------------------------------------

TWO_CONV_CLASSES = 4


def two_conv_classifier(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], path: Path,
                        opset: int = 17, spatial=(8, 8)) -> Path:
    """image [N, 3, H, W] -> ``nodes`` -> scores [N, 4], checked and saved to ``path``."""
    proto = model(nodes, [tensor("image", ["N", 3, *spatial])],
                  [tensor("scores", ["N", TWO_CONV_CLASSES])], initializers(inits), opset,
                  name=path.stem)
    return save(proto, path, check=True)


def two_conv_weights(seed: int, conv1_scale: float) -> dict[str, np.ndarray]:
    """w1, b1 (conv1: 3 -> 6), w2, b2 (conv2: 6 -> 5), fc_w, fc_b (Gemm: 5 -> 4)."""
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.normal(0, conv1_scale, (6, 3, 3, 3)), "b1": rng.normal(0, 0.1, 6),
        "w2": rng.normal(0, 0.3, (5, 6, 3, 3)), "b2": rng.normal(0, 0.1, 5),
        "fc_w": rng.normal(0, 1.0, (TWO_CONV_CLASSES, 5)),
        "fc_b": rng.normal(0, 0.1, TWO_CONV_CLASSES),
    }


def two_conv_head(source: str) -> list[onnx.NodeProto]:
    """``source`` -> conv2 -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> scores."""
    return [
        helper.make_node("Conv", [source, "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["scores"], name="fc", transB=1),
    ]


def clip(name: str, source: str, output: str, upper: float, opset: int,
         inits: dict) -> onnx.NodeProto:
    """Clip(0, upper): bounds as attributes before opset 11, as initializer inputs after."""
    if opset < 11:
        return helper.make_node("Clip", [source], [output], name=name, min=0.0, max=upper)
    inits[f"{name}_min"] = np.array(0.0, np.float32)
    inits[f"{name}_max"] = np.array(upper, np.float32)
    return helper.make_node("Clip", [source, f"{name}_min", f"{name}_max"], [output], name=name)


# --- a classifier around any body (the gradient-rule tests) ---------------------------------

def classifier(body, image_shape: tuple[int, ...], opset: int = 17, dtype=np.float32,
               seed: int = 0, classes: int = Graph.CLASSES) -> onnx.ModelProto:
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
