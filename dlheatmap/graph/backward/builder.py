"""The node builder every gradient rule writes with."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dlheatmap.graph.analysis import GraphInfo

STEM = "dlheatmap_grad/"


class UnsupportedGradientError(Exception):
    """The graph cannot be differentiated in ONNX (an op or attribute without a rule)."""


def attributes(node: onnx.NodeProto) -> dict:
    """A node's attributes as Python values (strings decoded)."""
    values = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
    return {name: value.decode() if isinstance(value, bytes) else value
            for name, value in values.items()}


@dataclass
class GradientBuilder:
    """Appends gradient nodes to a graph.

    ``shapes`` are the tensors' shapes for one image at the current input size (batch 1);
    rules use them for sizes that are fixed for a given input size (pooling areas, channel
    splits). ``dtype`` is the graph's floating type: constants and masks are made in it.

    Identical nodes are written once (:meth:`add` returns the output of an earlier node with
    the same op, inputs and attributes): two backward chains from one seed, a plain one to a
    layer and a guided one to the image, share every node up to the first guided op.
    """

    info: GraphInfo
    shapes: dict[str, tuple]
    opset: int
    dtype: type = np.float32
    guided: bool = False  # set by the driver while it writes a guided chain
    # a stride-1 Conv's input gradient as a Conv on flipped weights (a second copy of them,
    # about as fast as the forward layer) rather than a ConvTranspose on the model's own
    flip_stride_one: bool = True
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    # gradient tensor -> tensor of class indices [N], where the gradient is the one-hot seed
    seeds: dict[str, str] = field(default_factory=dict)
    # tensors whose nodes are written only once a node reads them (name -> writer)
    pending: dict[str, Callable[[], None]] = field(default_factory=dict)
    # forward nodes that must gain outputs (node name -> {output position: tensor name})
    extra_outputs: dict[str, dict[int, str]] = field(default_factory=dict)
    _count: int = 0
    _written: dict[tuple, str | list[str]] = field(default_factory=dict)
    _constants: dict[tuple, str] = field(default_factory=dict)
    _spread: dict[str, str] = field(default_factory=dict)

    @property
    def elem_type(self) -> int:
        return helper.np_dtype_to_tensor_dtype(np.dtype(self.dtype))

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{STEM}{stem}_{self._count}"

    def add(self, op_type: str, inputs: Iterable[str], name: str | None = None, **attrs) -> str:
        """Append one node (unless an identical one exists); returns its (single) output."""
        inputs = list(inputs)
        for tensor in inputs:
            if tensor in self.pending:
                self.pending.pop(tensor)()
        key = (op_type, tuple(inputs), repr(sorted(attrs.items())))
        if name is None and key in self._written:
            return self._written[key]
        output = name or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output],
                                           name=self.fresh(op_type), **attrs))
        if name is None:
            self._written[key] = output
        return output

    def add_multi(self, op_type: str, inputs: list[str], count: int, **attrs) -> list[str]:
        """Append a node with ``count`` outputs (unless an identical one exists); returns
        their names."""
        key = (op_type, tuple(inputs), count, repr(sorted(attrs.items())))
        if key not in self._written:
            outputs = [self.fresh(op_type.lower()) for _ in range(count)]
            self.nodes.append(helper.make_node(op_type, inputs, outputs,
                                               name=self.fresh(op_type), **attrs))
            self._written[key] = outputs
        return self._written[key]

    def constant(self, value, dtype=None) -> str:
        """An initializer holding ``value`` (the graph's float type unless ``dtype``); equal
        constants are shared."""
        array = np.asarray(value, dtype=dtype or self.dtype)
        key = (array.dtype.str, array.shape, hashlib.sha1(array.tobytes()).hexdigest())
        if key not in self._constants:
            name = self.fresh("const")
            self.initializers.append(numpy_helper.from_array(array, name))
            self._constants[key] = name
        return self._constants[key]

    def ints(self, values) -> str:
        """An int64 constant (axes, shapes, pads)."""
        return self.constant(values, np.int64)

    def initializer(self, tensor: str) -> np.ndarray | None:
        """The value of a graph initializer, or None if ``tensor`` is not one."""
        return self.info.constant(tensor)

    def constant_input(self, node: onnx.NodeProto, position: int, what: str) -> np.ndarray | None:
        """The value of ``node``'s optional input at ``position`` (None: absent); raises
        UnsupportedGradientError where it is computed in the graph."""
        if len(node.input) <= position or not node.input[position]:
            return None
        value = self.initializer(node.input[position])
        if value is None:
            raise UnsupportedGradientError(f"{node.op_type} with {what} computed in the graph")
        return value

    def shape(self, tensor: str) -> tuple[int, ...]:
        shape = self.shapes.get(tensor)
        if shape is None or any(not isinstance(dim, int) for dim in shape):
            raise UnsupportedGradientError(f"the shape of {tensor!r} is unknown")
        return tuple(shape)

    def refuse_batch_axis(self, axis: int, what: str) -> None:
        """Raise where ``what`` works along axis 0 and that is a batch of several images: the
        shapes here are for one image. A file whose batch is fixed to 1 has exact shapes."""
        if axis == 0 and self.info.image_input.batch != 1:
            raise UnsupportedGradientError(f"{what} along the batch axis")

    def rank(self, tensor: str) -> int:
        return len(self.shape(tensor))

    def spread(self, gradient: str, tensor: str) -> str:
        """Mark ``gradient`` as one that broadcasts to ``tensor``'s shape, expanded only when a
        rule needs its exact shape (:meth:`exact`)."""
        self._spread[gradient] = tensor
        return gradient

    def exact(self, gradient: str) -> str:
        """``gradient`` with its full shape (expanded, if it was spread)."""
        tensor = self._spread.get(gradient)
        if tensor is None:
            return gradient
        return self.add("Expand", [gradient, self.add("Shape", [tensor])])

    def like(self, gradient: str, tensor: str) -> str:
        """``gradient`` reshaped to ``tensor``'s runtime shape."""
        return self.add("Reshape", [gradient, self.add("Shape", [tensor])])

    def zeros_like(self, tensor: str) -> str:
        return self.add("ConstantOfShape", [self.add("Shape", [tensor])],
                        value=numpy_helper.from_array(np.zeros(1, self.dtype)))

    def cast(self, tensor: str) -> str:
        """``tensor`` in the graph's float type."""
        return self.add("Cast", [tensor], to=self.elem_type)

    def mask(self, condition: str) -> str:
        """A boolean tensor as 0.0 / 1.0. Multiplying by it is much faster in onnxruntime than
        ``Where`` with a scalar operand (about 10 x on a 376k-element tensor)."""
        return self.cast(condition)

    def masked(self, gradient: str, condition: str) -> str:
        """``gradient`` where ``condition`` holds, 0 elsewhere."""
        return self.add("Mul", [gradient, self.mask(condition)])

    def compare(self, op_type: str, tensor: str, value: float) -> str:
        """``tensor`` compared with a scalar (Greater, Less, ...)."""
        return self.add(op_type, [tensor, self.constant(value)])

    def scaled(self, tensor: str, factor: float) -> str:
        return tensor if factor == 1.0 else self.add("Mul", [tensor, self.constant(factor)])

    def reduce(self, op_type: str, tensor: str, axes: list[int], keepdims: int = 1) -> str:
        """ReduceSum, ReduceMean, ReduceMax, ... over ``axes`` (axes became an input of
        ReduceSum in opset 13, of the other reductions in opset 18)."""
        if self.opset < (13 if op_type == "ReduceSum" else 18):
            return self.add(op_type, [tensor], axes=list(axes), keepdims=keepdims)
        return self.add(op_type, [tensor, self.ints(list(axes))], keepdims=keepdims)

    def unsqueeze(self, tensor: str, axes: list[int]) -> str:
        return self.add("Unsqueeze", [tensor, self.ints(list(axes))])

    def squeeze(self, tensor: str, axes: list[int]) -> str:
        return self.add("Squeeze", [tensor, self.ints(list(axes))])

    def transpose(self, tensor: str, perm: list[int]) -> str:
        if list(perm) == sorted(perm):
            return tensor
        return self.add("Transpose", [tensor], perm=[int(i) for i in perm])

    def unbroadcast(self, gradient: str, tensor: str, output: str) -> str:
        """Sum ``gradient`` (shaped like ``output``) over the axes ``tensor`` was broadcast
        along, giving a gradient shaped like ``tensor``."""
        source, target = self.shape(tensor), self.shape(output)
        if source == target:
            return gradient
        lead = len(target) - len(source)
        axes = list(range(lead)) + [lead + axis for axis, dim in enumerate(source)
                                    if dim == 1 and target[lead + axis] != 1]
        summed = self.reduce("ReduceSum", self.exact(gradient), axes) if axes else gradient
        return self.like(summed, tensor) if lead else summed
