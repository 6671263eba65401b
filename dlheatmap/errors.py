"""HALCON-style errors.

HALCON's Python interface raises ``HOperatorError`` (a subclass of ``HError``) carrying the
numeric ``error_code``. dlheatmap raises the same kind of exception with HALCON's codes so that
ported scripts can keep their ``except`` clauses and code checks.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Every HALCON error code dlheatmap raises, named once. An ``ErrorCode`` compares equal to
    HALCON's number (``ErrorCode.UNSUPPORTED_METHOD == 7852``); the generic codes that carry a
    parameter position (120n, 130n, 140n) come from :func:`wrong_type`, :func:`wrong_value` and
    :func:`wrong_count` instead."""

    WRONG_OBJECT_COUNT = 1501
    UNKNOWN_HANDLE = 2450
    DICT_KEY_MISSING = 2894
    DICT_TUPLE_LENGTH = 2895
    DICT_TUPLE_TYPE = 2896
    FILE_NOT_FOUND = 5200
    WRITE_FAILED = 5212
    WRONG_PIXEL_TYPE = 5217
    NOT_AN_IMAGE_FILE = 5234
    WRONG_GRAPHIC_FORMAT = 5235
    INPUTS_MISSING = 7783
    INVALID_LAYER = 7785
    PARAM_NOT_AVAILABLE = 7788
    CLASS_IDS_NOT_UNIQUE = 7792
    READ_ONNX = 7801
    UNSUPPORTED_RUNTIME = 7850
    UNSUPPORTED_MODEL_TYPE = 7851
    UNSUPPORTED_METHOD = 7852
    WRONG_TARGET_CLASS = 7853
    UNSUPPORTED_GENPARAM = 7911
    UNSUPPORTED_MODEL = 7912
    UNSUPPORTED_GENVALUE = 7914
    WRONG_GREY_TYPE = 9001
    WRONG_IMAGE_SIZE = 9004


# HALCON error texts for the codes dlheatmap raises (from HALCON's error code table).
ERROR_TEXTS: dict[int, str] = {
    ErrorCode.WRONG_OBJECT_COUNT: "Wrong number of values of object parameter 1",
    ErrorCode.UNKNOWN_HANDLE: "Unknown handle or handle of wrong type",
    ErrorCode.DICT_KEY_MISSING: "Key not found in dictionary",
    ErrorCode.DICT_TUPLE_LENGTH: "Incorrect tuple length in dict",
    ErrorCode.DICT_TUPLE_TYPE: "Incorrect tuple type in dict",
    ErrorCode.FILE_NOT_FOUND: "File not found",
    ErrorCode.WRITE_FAILED: "Error while writing to file",
    ErrorCode.WRONG_PIXEL_TYPE: "Wrong type for pixel (e.g. byte)",
    ErrorCode.NOT_AN_IMAGE_FILE: "No file found in known graphic format",
    ErrorCode.WRONG_GRAPHIC_FORMAT: "Wrong graphic format",
    ErrorCode.INPUTS_MISSING: "DL: Inputs missing in input dict",
    ErrorCode.INVALID_LAYER: "DL: Invalid layer name",
    ErrorCode.PARAM_NOT_AVAILABLE: "DL: Parameter is not available",
    ErrorCode.CLASS_IDS_NOT_UNIQUE: "DL: Some class ids are not unique",
    ErrorCode.READ_ONNX: "Error occurred while reading an ONNX model",
    ErrorCode.UNSUPPORTED_RUNTIME: "DL: Heatmap is unsupported with the selected runtime",
    ErrorCode.UNSUPPORTED_MODEL_TYPE: "DL: Unsupported heatmap model type. The heatmap is only "
    "applicable for model type 'classification'",
    ErrorCode.UNSUPPORTED_METHOD: "DL: Unsupported heatmap method",
    ErrorCode.WRONG_TARGET_CLASS: "DL: Wrong target class id for heatmap",
    ErrorCode.UNSUPPORTED_GENPARAM: "DL: Unsupported generic parameter",
    ErrorCode.UNSUPPORTED_MODEL: "DL: Operator does not support model",
    ErrorCode.UNSUPPORTED_GENVALUE: "DL: Unsupported generic value(s)",
    ErrorCode.WRONG_GREY_TYPE: "Image to process has wrong gray value type",
    ErrorCode.WRONG_IMAGE_SIZE: "Wrong image format for operation (too big or too small)",
}

# HALCON's generic control-parameter codes: base + position of the parameter (1..20).
WRONG_TYPE_BASE = 1200
WRONG_VALUE_BASE = 1300
WRONG_COUNT_BASE = 1400

_GENERIC_TEXTS = {
    WRONG_TYPE_BASE: "Wrong type of control parameter {n}",
    WRONG_VALUE_BASE: "Wrong value of control parameter {n}",
    WRONG_COUNT_BASE: "Wrong number of values of control parameter {n}",
}


def error_text(code: int) -> str:
    """HALCON's short text for ``code``."""
    if code in ERROR_TEXTS:
        return ERROR_TEXTS[code]
    base, position = divmod(code, 100)
    template = _GENERIC_TEXTS.get(base * 100)
    if template and 1 <= position <= 20:
        return template.format(n=position)
    return "HALCON error"


class HError(Exception):
    """Base class of HALCON-style errors."""


class HOperatorError(HError):
    """An operator refused its input.

    Attributes
    ----------
    error_code : int
        HALCON's error code, e.g. 7852 for an unsupported heatmap method.
    message : str
        HALCON's text for the code, with the operator name.
    extended_message : str
        What exactly was wrong (which parameter, which value).
    """

    def __init__(self, error_code: int, extended_message: str = "", operator: str = ""):
        self.error_code = int(error_code)
        self.operator = operator
        where = f" in operator {operator}" if operator else ""
        self.message = f"HALCON error #{self.error_code}: {error_text(self.error_code)}{where}"
        self.extended_message = extended_message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.extended_message:
            return f"{self.message}: {self.extended_message}"
        return self.message


def wrong_type(position: int, detail: str, operator: str = "") -> HOperatorError:
    """Error 120n: wrong type of control parameter ``position``."""
    return HOperatorError(WRONG_TYPE_BASE + position, detail, operator)


def wrong_value(position: int, detail: str, operator: str = "") -> HOperatorError:
    """Error 130n: wrong value of control parameter ``position``."""
    return HOperatorError(WRONG_VALUE_BASE + position, detail, operator)


def wrong_count(position: int, detail: str, operator: str = "") -> HOperatorError:
    """Error 140n: wrong number of values of control parameter ``position``."""
    return HOperatorError(WRONG_COUNT_BASE + position, detail, operator)
