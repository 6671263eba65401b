"""Argument checks shared by the operators."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from dlheatmap.errors import ErrorCode, HOperatorError, wrong_count, wrong_type, wrong_value
from dlheatmap.model import Model
from dlheatmap.params import ModelParams, short_repr
from dlheatmap.spec import GenParamSpec, operator_spec
from dlheatmap.values import empty_tuple, is_integer


def model_handle(handle: Any, operator: str) -> Model:
    """``handle`` as a usable Model, else HALCON error 2450."""
    if not isinstance(handle, Model):
        raise HOperatorError(ErrorCode.UNKNOWN_HANDLE, "DLModelHandle must be a DL model "
                             f"handle from read_dl_model, got {type(handle).__name__}", operator)
    handle.ensure_usable(operator)
    return handle


@contextlib.contextmanager
def running_graph(operator: str) -> Iterator[None]:
    """Report a graph that fails only when it runs as 7801, like a file that cannot be read.

    Such graphs pass ONNX's checker (which does not infer shapes) but onnxruntime or the torch
    module converted from them fail on the first real input (e.g. a Conv weight with the wrong
    number of input channels). Arguments are validated before this point, so what fails here
    is the graph, not the call. Translated are onnxruntime's exceptions, torch's RuntimeError
    and any exception raised while the converted torch graph executes; anything else is a
    dlheatmap bug and propagates unchanged. Where a node's converted torch module raised, the
    message names the node (onnxruntime's own messages name theirs). Numpy's overflow warnings
    are silenced: outputs are checked by :func:`check_outputs` instead.
    """
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            yield
    except HOperatorError:
        raise
    except Exception as exc:
        if not _raised_by_graph(exc):
            raise
        node = _failing_node(exc)
        where = f" in node {node}" if node else ""
        raise HOperatorError(
            ErrorCode.READ_ONNX,
f"the ONNX graph failed to run{where}: {type(exc).__name__}: {exc}",
            operator,
        ) from exc


def _failing_node(exc: Exception) -> str | None:
    """The node whose converted torch module raised ``exc``, as "'name' (ModuleType)".

    onnx2torch makes every ONNX node a submodule of a torch.fx GraphModule, named after the
    node (with '.' written as '/', which torch forbids in module names), and torch.fx runs
    them from a generated ``forward`` (file ``<eval_with_key>.N``) whose ``self`` is that
    GraphModule. The first frame below it whose ``self`` is one of its submodules is the
    failing node's. None when the traceback shows no such frame (an error outside a node's
    module, or in onnxruntime).
    """
    graph_module = None
    children: dict[int, str] = {}
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        owner = frame.f_locals.get("self")
        if graph_module is None:
            if frame.f_code.co_filename.startswith("<eval_with_key") and hasattr(
                    owner, "named_children"):
                graph_module = owner
                children = {id(child): name for name, child in owner.named_children()}
            continue
        name = children.get(id(owner)) if owner is not None else None
        if name is not None:
            return f"{name!r} ({type(owner).__name__})"
    return None


def _raised_by_graph(exc: Exception) -> bool:
    if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError):
        return False  # the machine, not the graph
    if type(exc).__module__.startswith("onnxruntime") or isinstance(exc, RuntimeError):
        return True
    # onnx2torch modules, and the code torch.fx generates for the converted graph
    return any("onnx2torch" in frame.filename or frame.filename.startswith("<eval_with_key")
               for frame in traceback.extract_tb(exc.__traceback__))


def check_outputs(model: Model, params: ModelParams, operator: str, probabilities: np.ndarray,
                  *others: np.ndarray) -> None:
    """Refuse results that are inconsistent with the model or not finite.

    7801 if the graph returns another number of class scores than it declares, or its output
    is not finite even for an all-zero image (NaN or Inf weights); 1302 (the samples
    parameter) if a finite image overflows inside the network (e.g. pixel values of 1e38).
    Returning NaN confidences or heatmaps would hide either.
    """
    if probabilities.shape[1] != len(params.class_ids):
        raise HOperatorError(
            ErrorCode.READ_ONNX,
f"the graph returns {probabilities.shape[1]} class scores but declares "
            f"{len(params.class_ids)} classes in its output shape", operator)
    bad = np.zeros(len(probabilities), bool)
    for values in (probabilities, *others):
        bad |= ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if not bad.any():
        return
    if not _finite_for_zero_image(model, params, operator):
        raise HOperatorError(
            ErrorCode.READ_ONNX,
"the model's output is not finite even for an all-zero image (NaN or "
            "Inf weights?)", operator)
    raise wrong_value(
        2, f"sample {int(np.argmax(bad))}: the model's output is not finite for this image "
        "(pixel values too large for the network?)", operator)


def _finite_for_zero_image(model: Model, params: ModelParams, operator: str) -> bool:
    from dlheatmap.model import pad_batch

    shape = (1, params.image_height, params.image_width, params.image_num_channels)
    (_, _, padded), *_ = model.batches(1, params)
    with running_graph(operator):
        (output,) = model.run(pad_batch(np.zeros(shape, np.float32), padded), ())
        return bool(np.isfinite(model.probabilities(output)).all())


def classification_model(model: Model, code: int, operator: str) -> None:
    if model.info.model_type != "classification":
        raise HOperatorError(
            code,
            f"model type is {model.info.model_type!r}; only 'classification' models (one image "
            "input, one [batch, classes] output) are supported",
            operator,
        )


def string_arg(value: Any, position: int, name: str, operator: str) -> str:
    """A single string (a one-element sequence of one is accepted, as HALCON tuples are)."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, (list, tuple)):
        raise wrong_count(position, f"{name} takes a single string", operator)
    if not isinstance(value, str):
        raise wrong_type(position, f"{name} must be a string, got {type(value).__name__}",
                         operator)
    return value


def sorted_results(probabilities: np.ndarray, params: ModelParams) -> list[dict]:
    """apply_dl_model's classification result dicts, all classes, best first."""
    order = np.argsort(-probabilities, axis=1, kind="stable")
    class_ids, class_names = params.class_arrays
    ids, names = class_ids[order], class_names[order]
    confidences = np.take_along_axis(probabilities, order, axis=1).astype(np.float64)
    return [
        {
            "classification_class_ids": row_ids.tolist(),
            "classification_class_names": row_names.tolist(),
            "classification_confidences": row_confidences.tolist(),
        }
        for row_ids, row_names, row_confidences in zip(ids, names, confidences, strict=True)
    ]


def as_mapping(value: Any) -> Mapping | None:
    return value if isinstance(value, Mapping) else None


def gen_options(value: Any, operator: str, position: int, topic: str) -> dict[str, Any]:
    """A GenParam dict checked against the operator's ``gen_param`` entries of the spec, with
    defaults filled in.

    ``topic`` (a method or a precision) selects which keys apply. Not a dict (None and the
    empty tuple mean {}): 120n at ``position``; an unknown key, or one that does not apply to
    ``topic``: 7911; a value of the wrong type, not allowed or below the minimum: 7914. An
    empty tuple as a value stands for the key's empty default. Keys are checked before
    values, so the code does not depend on the dict's order.
    """
    specs = operator_spec(operator).gen_params
    if isinstance(value, list) and len(value) == 1:  # a dict handle as a HALCON tuple
        value = value[0]
    if empty_tuple(value):
        value = {}
    if not isinstance(value, Mapping):
        raise wrong_type(position, f"GenParam must be a dict, got {type(value).__name__}",
                         operator)
    for key in value:
        spec = specs.get(key)
        if spec is None or topic not in spec.methods:
            where = "" if spec is None else f" for {topic!r} (only {list(spec.methods)})"
            raise HOperatorError(ErrorCode.UNSUPPORTED_GENPARAM, f"GenParam key {key!r} is not "
                                 f"supported{where}; known: {sorted(specs)}", operator)
    options = {name: spec.default for name, spec in specs.items()}
    options.update({key: _gen_value(spec, item, operator)
                    for key, item in value.items() for spec in (specs[key],)})
    return options


def _gen_value(spec: GenParamSpec, item: Any, operator: str) -> Any:
    if isinstance(item, np.ndarray):
        item = item.tolist()
    if isinstance(item, (list, tuple)):
        if not item:
            return spec.default
        if len(item) > 1:
            raise HOperatorError(ErrorCode.UNSUPPORTED_GENVALUE, f"GenParam {spec.name!r} "
                                 f"takes a single value, got {short_repr(item)}", operator)
        (item,) = item
    checks = {"integer": is_integer, "string": lambda value: isinstance(value, str)}
    if not checks[spec.value_type](item):
        raise HOperatorError(ErrorCode.UNSUPPORTED_GENVALUE, f"GenParam {spec.name!r} takes "
                             f"a {spec.value_type}, got {short_repr(item)}", operator)
    if spec.values is not None and item not in spec.values:
        raise HOperatorError(ErrorCode.UNSUPPORTED_GENVALUE, f"GenParam {spec.name!r}: "
                             f"{short_repr(item)} is not one of {list(spec.values)}", operator)
    if spec.min is not None and item < spec.min:
        raise HOperatorError(ErrorCode.UNSUPPORTED_GENVALUE, f"GenParam {spec.name!r} must be "
                             f">= {spec.min:g}, got {short_repr(item)}", operator)
    return int(item) if spec.value_type == "integer" else item


def one_or_many(value: Any, kind: type, position: int, name: str, operator: str) -> list:
    """One ``kind`` (a dict, a device) or a non-empty sequence of them, as a list (120n for
    anything else, 140n for an empty sequence)."""
    if isinstance(value, kind):
        return [value]
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise wrong_type(position, f"{name} must be a {kind.__name__} or a sequence of them, "
                         f"got {type(value).__name__}", operator)
    if not value:
        raise wrong_count(position, f"{name} is empty", operator)
    for index, item in enumerate(value):
        if not isinstance(item, kind):
            raise wrong_type(position, f"{name}: item {index} is {type(item).__name__}, not a "
                             f"{kind.__name__}", operator)
    return list(value)
