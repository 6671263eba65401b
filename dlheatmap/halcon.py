"""Drop-in module for scripts written for HALCON's Python interface.

Change ``import halcon as ha`` to ``import dlheatmap.halcon as ha`` and a heatmap script runs on
an ONNX model: the operators keep HALCON's names, argument order and ``_s`` single-value
variants, dictionaries are plain Python dicts (handles), images are numpy arrays (iconic
objects), and errors are :class:`HOperatorError` with HALCON's codes.

Contents:

- deep-learning operators: read_dl_model, clear_dl_model, get_dl_model_param(_s),
  set_dl_model_param, apply_dl_model, gen_dl_model_heatmap(_s), query_available_dl_devices,
  get_dl_device_param, optimize_dl_model_for_inference;
- image operators: read_image, write_image, get_image_size(_s), count_channels(_s);
- dictionary operators: create_dict, set_dict_tuple, get_dict_tuple(_s), set_dict_object,
  get_dict_object, get_dict_param(_s), remove_dict_key;
- HDevelop procedures, callable directly or through HDevEngine:
  gen_dl_samples_from_images, create_dl_preprocess_param,
  create_dl_preprocess_param_from_model, preprocess_dl_samples,
  gen_dl_model_classification_heatmap, dev_display_dl_data;
  with the window operators dump_window and dump_window_image for what dev_display_dl_data
  drew;
- HDevEngine, HDevProcedure, HDevProcedureCall, HDevEngineError: enough of HALCON's
  HDevEngine classes to call the procedures above the way HALCON scripts call them;
- HError, HOperatorError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dlheatmap.dicts import (
    create_dict,
    get_dict_object,
    get_dict_param,
    get_dict_param_s,
    get_dict_tuple,
    get_dict_tuple_s,
    remove_dict_key,
    set_dict_object,
    set_dict_tuple,
)
from dlheatmap.display import dev_display_dl_data, dump_window, dump_window_image
from dlheatmap.errors import HError, HOperatorError, error_text
from dlheatmap.imaging import (
    count_channels,
    count_channels_s,
    get_image_size,
    get_image_size_s,
    read_image,
    write_image,
)
from dlheatmap.operators import (
    apply_dl_model,
    clear_dl_model,
    gen_dl_model_classification_heatmap,
    gen_dl_model_heatmap,
    gen_dl_model_heatmap_s,
    get_dl_device_param,
    get_dl_model_param,
    get_dl_model_param_s,
    optimize_dl_model_for_inference,
    query_available_dl_devices,
    read_dl_model,
    set_dl_model_param,
)
from dlheatmap.preprocess import (
    create_dl_preprocess_param,
    create_dl_preprocess_param_from_model,
    gen_dl_samples_from_images,
    preprocess_dl_samples,
)

__all__ = [
    "HDevEngine",
    "HDevEngineError",
    "HDevProcedure",
    "HDevProcedureCall",
    "HError",
    "HOperatorError",
    "apply_dl_model",
    "clear_dl_model",
    "count_channels",
    "count_channels_s",
    "create_dict",
    "create_dl_preprocess_param",
    "create_dl_preprocess_param_from_model",
    "dev_display_dl_data",
    "dump_window",
    "dump_window_image",
    "gen_dl_model_classification_heatmap",
    "gen_dl_model_heatmap",
    "gen_dl_model_heatmap_s",
    "gen_dl_samples_from_images",
    "get_dict_object",
    "get_dict_param",
    "get_dict_param_s",
    "get_dict_tuple",
    "get_dict_tuple_s",
    "get_dl_device_param",
    "get_dl_model_param",
    "get_dl_model_param_s",
    "get_image_size",
    "get_image_size_s",
    "optimize_dl_model_for_inference",
    "preprocess_dl_samples",
    "query_available_dl_devices",
    "read_dl_model",
    "read_image",
    "remove_dict_key",
    "set_dict_object",
    "set_dict_tuple",
    "set_dl_model_param",
    "write_image",
]


# --- HDevEngine ------------------------------------------------------------------------------

# HDevEngine's own error codes are not publicly documented: engine-level errors (unknown
# procedure, parameter name or index) carry code 0; HALCON errors inside a procedure keep theirs.
UNKNOWN_PROCEDURE = 0
UNKNOWN_PARAMETER = 0


class HDevEngineError(HError):
    """An error raised while calling a procedure through HDevEngine.

    As in HALCON, a HALCON error inside the procedure keeps its code in ``error_code``;
    ``procedure_name`` names the procedure.
    """

    def __init__(self, error_code: int, message: str, procedure_name: str = ""):
        self.error_code = int(error_code)
        self.message = message
        self.procedure_name = procedure_name
        super().__init__(str(self))

    def __str__(self) -> str:
        if 1000 < self.error_code <= 10000:
            return f"HALCON error #{self.error_code}: {self.message}"
        return f"HDevEngine error: {self.message}"


@dataclass(frozen=True)
class _Signature:
    function: Callable[..., Any]
    input_iconic: tuple[str, ...]
    input_control: tuple[str, ...]
    output_control: tuple[str, ...]


# HALCON's parameter names for each procedure dlheatmap implements.
_PROCEDURES: dict[str, _Signature] = {
    "gen_dl_samples_from_images": _Signature(
        gen_dl_samples_from_images, ("Images",), (), ("DLSampleBatch",)),
    "create_dl_preprocess_param": _Signature(
        create_dl_preprocess_param, (),
        ("DLModelType", "ImageWidth", "ImageHeight", "ImageNumChannels", "ImageRangeMin",
         "ImageRangeMax", "NormalizationType", "DomainHandling", "IgnoreClassIDs",
         "SetBackgroundID", "ClassIDsBackground", "GenParam"),
        ("DLPreprocessParam",)),
    "create_dl_preprocess_param_from_model": _Signature(
        create_dl_preprocess_param_from_model, (),
        ("DLModelHandle", "NormalizationType", "DomainHandling", "SetBackgroundID",
         "ClassIDsBackground", "GenParam"),
        ("DLPreprocessParam",)),
    "preprocess_dl_samples": _Signature(
        preprocess_dl_samples, (), ("DLSampleBatch", "DLPreprocessParam"), ()),
    "gen_dl_model_classification_heatmap": _Signature(
        gen_dl_model_classification_heatmap, (),
        ("DLModelHandle", "DLSample", "DLResult", "GenParam"), ()),
    "dev_display_dl_data": _Signature(
        dev_display_dl_data, (),
        ("DLSample", "DLResult", "DLDatasetInfo", "KeysForDisplay", "GenParam",
         "WindowHandleDict"), ()),
}


class HDevEngine:
    """HALCON's HDevEngine: here the procedures are built in, so paths change nothing."""

    def __init__(self) -> None:
        self.procedure_paths: list[str] = []

    def set_procedure_path(self, path: str) -> None:
        self.procedure_paths = [str(path)]

    def add_procedure_path(self, path: str) -> None:
        self.procedure_paths.append(str(path))

    def get_procedure_names(self) -> list[str]:
        return sorted(_PROCEDURES)

    def get_loaded_procedure_names(self) -> list[str]:
        return sorted(_PROCEDURES)


class HDevProcedure:
    """A procedure to call (``HDevProcedure.load_external(name)``)."""

    def __init__(self, name: str, signature: _Signature):
        self.name = name
        self.loaded = True
        self._signature = signature
        self.input_iconic_param_names = list(signature.input_iconic)
        self.output_iconic_param_names: list[str] = []
        self.input_control_param_names = list(signature.input_control)
        self.output_control_param_names = list(signature.output_control)

    @staticmethod
    def load_external(name: str) -> HDevProcedure:
        """The procedure ``name``; HDevEngineError if dlheatmap does not provide it."""
        if name not in _PROCEDURES:
            raise HDevEngineError(UNKNOWN_PROCEDURE, f"procedure {name!r} is not available; "
                                  f"dlheatmap provides {sorted(_PROCEDURES)}", name)
        return HDevProcedure(name, _PROCEDURES[name])


class HDevProcedureCall:
    """One call of a procedure: set inputs, ``execute()``, read outputs.

    Indices start at 1, as in HALCON. Control outputs come back as lists (HALCON tuples), so
    a dict output is ``[dict]``; the operators accept such one-element lists as handles.
    """

    def __init__(self, procedure: HDevProcedure):
        self.procedure = procedure
        self._inputs: dict[str, Any] = {}
        self._outputs: dict[str, list] = {}

    def _name(self, names: list[str], index: int) -> str:
        if not 1 <= index <= len(names):
            raise HDevEngineError(UNKNOWN_PARAMETER, f"no parameter index {index} (1.."
                                  f"{len(names)})", self.procedure.name)
        return names[index - 1]

    def _set(self, names: list[str], name: str, value: Any) -> None:
        if name not in names:
            raise HDevEngineError(UNKNOWN_PARAMETER, f"no input parameter {name!r}; "
                                  f"inputs: {names}", self.procedure.name)
        self._inputs[name] = value

    def set_input_control_param_by_name(self, name: str, value: Any) -> None:
        self._set(self.procedure.input_control_param_names, name, value)

    def set_input_control_param_by_index(self, index: int, value: Any) -> None:
        names = self.procedure.input_control_param_names
        self._set(names, self._name(names, index), value)

    def set_input_iconic_param_by_name(self, name: str, value: Any) -> None:
        self._set(self.procedure.input_iconic_param_names, name, value)

    def set_input_iconic_param_by_index(self, index: int, value: Any) -> None:
        names = self.procedure.input_iconic_param_names
        self._set(names, self._name(names, index), value)

    def execute(self) -> None:
        """Run the procedure; a HALCON error inside becomes an HDevEngineError."""
        signature = self.procedure._signature
        names = [*signature.input_iconic, *signature.input_control]
        missing = [name for name in names if name not in self._inputs]
        if missing:
            raise HDevEngineError(UNKNOWN_PARAMETER, f"inputs not set: {missing}",
                                  self.procedure.name)
        try:
            result = signature.function(*(self._inputs[name] for name in names))
        except HOperatorError as exc:
            text = error_text(exc.error_code)
            detail = f": {exc.extended_message}" if exc.extended_message else ""
            raise HDevEngineError(exc.error_code, f"{text} in procedure {self.procedure.name}"
                                  f"{detail}", self.procedure.name) from exc
        self._outputs = {}
        if signature.output_control:
            (name,) = signature.output_control
            self._outputs[name] = result if isinstance(result, list) else [result]

    def get_output_control_param_by_name(self, name: str) -> list:
        if name not in self._outputs:
            raise HDevEngineError(UNKNOWN_PARAMETER, f"no output {name!r} (outputs: "
                                  f"{list(self.procedure.output_control_param_names)}; "
                                  "called execute()?)", self.procedure.name)
        return self._outputs[name]

    def get_output_control_param_by_index(self, index: int) -> list:
        names = self.procedure.output_control_param_names
        return self.get_output_control_param_by_name(self._name(names, index))
