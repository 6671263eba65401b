"""The model handle: a loaded ONNX classifier, its parameters and its execution caches.

``Model`` is the Pythonic core object; HALCON's ``read_dl_model`` returns one. Parameters are
an immutable ``ModelParams`` replaced as a whole under a lock, and every call works on the
snapshot it took when it started, so ``set_dl_model_param`` from another thread never changes a
running call. Sessions and converted torch modules are cached per (what they compute, device)
and shared by all threads; onnxruntime sessions and frozen torch modules are safe to run
concurrently.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import onnx

from dlheatmap.errors import ErrorCode, HOperatorError
from dlheatmap.graph import GraphInfo, LayerInfo, analyse, infer_shapes, load_model, load_proto
from dlheatmap.graph.subgraph import with_extra_outputs
from dlheatmap.params import ModelParams, default_params, validate_value
from dlheatmap.runtime.devices import Device, resolve_device
from dlheatmap.runtime.onnx_runtime import make_session

T = TypeVar("T")
_CACHE_SIZE = 16


class Model:
    """An ONNX classification model with HALCON-style parameters.

    Parameters
    ----------
    onnx_model : onnx.ModelProto
        A normalised model (see :func:`dlheatmap.graph.load_model`).
    source : str, optional
        Where it was read from, for messages.
    """

    def __init__(self, onnx_model: onnx.ModelProto, source: str | None = None):
        self.info: GraphInfo = analyse(onnx_model)
        self.source = source
        self._params = default_params(self.info)
        self._lock = threading.RLock()
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._cleared = False

    @classmethod
    def from_file(cls, path: str | os.PathLike, operator: str = "read_dl_model") -> Model:
        """Read and normalise an ONNX file.

        The CPU inference session is built here, so that a graph onnxruntime cannot load fails
        at read time (7801, naming the op and node) and not at the first apply_dl_model.
        """
        model = cls(load_model(path, operator), source=os.fspath(path))
        model.session((), Device("cpu"), operator)
        return model

    @classmethod
    def from_proto(cls, onnx_model: onnx.ModelProto, source: str | None = None,
                   operator: str = "read_dl_model") -> Model:
        """A handle on a graph held in memory, checked and normalised like a file's graph
        (7801 if ONNX's checker or onnxruntime refuses it)."""
        model = cls(load_proto(onnx_model, source or "the model", operator), source=source)
        model.session((), Device("cpu"), operator)
        return model

    def derived(self, onnx_model: onnx.ModelProto, source: str, operator: str,
                **changes: Any) -> Model:
        """A new handle on another form of this model's graph (a converted precision) with
        this handle's parameters, ``changes`` applied (ModelParams fields)."""
        model = Model.from_proto(onnx_model, source, operator)
        model._params = _replace(self.params, changes)
        return model

    def __repr__(self) -> str:
        return f"<dlheatmap.Model {self.info.model_type} from {self.source or 'memory'}>"

    # --- parameters ----------------------------------------------------------------------

    @property
    def params(self) -> ModelParams:
        """The current parameters (an immutable snapshot)."""
        self.ensure_usable()
        return self._params

    def set_param(
        self, name: str, value: Any, operator: str = "set_dl_model_param", position: int = 3
    ) -> None:
        """Validate and set one parameter (names and rules as in ``spec/operators.toml``)."""
        with self._lock:
            params = self.params
            changes = validate_value(name, value, self.info, params, operator, position)
            self._params = _replace(params, changes)

    def clear(self) -> None:
        """Release sessions and modules; the handle cannot be used afterwards."""
        with self._lock:
            self._cleared = True
            self._cache.clear()

    def ensure_usable(self, operator: str = "") -> None:
        if self._cleared:
            raise HOperatorError(ErrorCode.UNKNOWN_HANDLE, "the model handle was cleared", operator)

    def device_for(self, params: ModelParams) -> Device:
        """Where a call with parameters ``params`` runs (a call's snapshot, not live state)."""
        return resolve_device(params.runtime, params.gpu)

    # --- caches --------------------------------------------------------------------------

    def cached(self, key: tuple, factory: Callable[[], T]) -> T:
        """The cached object for ``key``, built once by ``factory`` (least recently used out)."""
        with self._lock:
            self.ensure_usable()
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            value = self._cache[key] = factory()
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
            return value

    # --- graph facts at the current input size --------------------------------------------

    def input_dims(self, params: ModelParams, batch: int = 1) -> tuple[int, int, int, int]:
        image = self.info.image_input
        if image is None:
            raise HOperatorError(ErrorCode.UNSUPPORTED_MODEL, "the model has no single image input")
        channels = params.image_num_channels
        if image.layout == "NHWC":
            return (batch, params.image_height, params.image_width, channels)
        return (batch, channels, params.image_height, params.image_width)

    def tensor_shapes(self, params: ModelParams | None = None) -> dict[str, tuple[int, ...]]:
        """Shapes of all tensors for one image at the current size (batch dimension 1)."""
        params = params or self.params
        dims = self.input_dims(params)
        return self.cached(("shapes", dims), lambda: self._compute_shapes(dims))

    def _compute_shapes(self, dims: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        shapes = infer_shapes(self.info.model, dims)
        missing = [out for layer in self.info.layers for out in layer.outputs
                   if out and out not in shapes]
        if missing:  # ONNX could not infer everything: ask onnxruntime on a dummy input
            shapes.update(self._probe_shapes(dims, missing))
        return shapes

    def _probe_shapes(self, dims: tuple[int, ...], tensors: list[str]) -> dict[str, tuple]:
        model = with_extra_outputs(self.info.model, tensors)
        session = make_session(model, Device("cpu"), "get_dl_model_param")
        names = [out.name for out in session.get_outputs()]
        try:
            feed = {self.info.image_input.name: np.zeros(dims, self.info.image_input.dtype)}
            values = session.run(names, feed)
        except Exception:  # a graph that cannot run (or be fed) at this size keeps unknown shapes
            return {}
        return {name: tuple(value.shape) for name, value in zip(names, values, strict=True)}

    def layer_shape(self, layer: LayerInfo, params: ModelParams | None = None) -> tuple | None:
        return self.tensor_shapes(params).get(layer.output)

    @cached_property
    def conv_layers(self) -> list[LayerInfo]:
        return [layer for layer in self.info.layers if layer.op_type == "Conv"]

    def spatial_size(self, layer: LayerInfo, params: ModelParams | None = None) -> tuple | None:
        """(height, width) of a layer's NCHW output, or None if unknown or not 4-D."""
        shape = self.layer_shape(layer, params)
        if shape is None or len(shape) != 4:
            return None
        return shape[2], shape[3]

    def default_target_layer(self, params: ModelParams | None = None) -> LayerInfo | None:
        """The deepest Conv node whose output width and height are both greater than 1."""
        for layer in reversed(self.conv_layers):
            size = self.spatial_size(layer, params)
            if size is not None and size[0] > 1 and size[1] > 1:
                return layer
        return None

    # --- forward pass with onnxruntime ----------------------------------------------------

    def session(
        self, extra_outputs: tuple[str, ...], device: Device, operator: str = "apply_dl_model"
    ):
        """An onnxruntime session returning the model output and ``extra_outputs``."""
        def build():
            graph = with_extra_outputs(self.info.model, extra_outputs)
            # Sessions with extra outputs serve gradient passes: torch runs right after them.
            return make_session(graph, device, operator, spin=not extra_outputs)

        return self.cached(("ort", extra_outputs, device), build)

    def to_model_layout(self, images: np.ndarray) -> np.ndarray:
        """N x H x W x C images (HALCON layout) as the graph's input tensor."""
        image = self.info.image_input
        if image.layout == "NCHW":
            images = images.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(images, dtype=image.dtype)

    def from_model_layout(self, tensor: np.ndarray) -> np.ndarray:
        """A tensor in the graph's input layout back to N x H x W x C."""
        if self.info.image_input.layout == "NCHW":
            tensor = tensor.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(tensor)

    def run(
        self, images: np.ndarray, extra_outputs: tuple[str, ...] = (), device: Device | None = None
    ) -> list[np.ndarray]:
        """Run one batch: returns [model output, *extra_outputs] for N x H x W x C images."""
        device = device or self.device_for(self.params)
        session = self.session(tuple(extra_outputs), device)
        names = [self.info.output_name, *extra_outputs]
        feed = {self.info.image_input.name: self.to_model_layout(images)}
        return session.run(names, feed)

    def probabilities(self, output: np.ndarray) -> np.ndarray:
        """Class probabilities [N, classes] from the model's own output."""
        output = output.reshape(output.shape[0], -1).astype(np.float32, copy=False)
        if self.info.output_kind == "probabilities":
            return output
        if self.info.output_kind == "log_probabilities":
            return np.exp(output)
        return softmax(output)

    def batches(self, count: int, params: ModelParams) -> Iterator[tuple[int, int, int]]:
        """(start, stop, padded size) of each batch of ``params.batch_size`` samples.

        Graphs with a fixed batch dimension get their last batch padded to that size.
        """
        size = params.batch_size
        fixed = self.info.image_input.batch is not None
        for start in range(0, count, size):
            stop = min(start + size, count)
            yield start, stop, size if fixed else stop - start


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def pad_batch(images: np.ndarray, size: int) -> np.ndarray:
    """Pad a batch with zero images up to ``size`` (for graphs with a fixed batch size)."""
    if len(images) == size:
        return images
    padding = np.zeros((size - len(images), *images.shape[1:]), images.dtype)
    return np.concatenate([images, padding])


def _replace(params: ModelParams, changes: dict[str, Any]) -> ModelParams:
    from dataclasses import replace

    return replace(params, **changes)
