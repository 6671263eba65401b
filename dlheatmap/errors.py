"""HALCON-style errors.

HALCON's Python interface raises ``HOperatorError`` (a subclass of ``HError``) carrying the
numeric ``error_code``. dlheatmap raises the same kind of exception with HALCON's codes so that
ported scripts can keep their ``except`` clauses and code checks.
"""

from __future__ import annotations

# HALCON error texts for the codes dlheatmap raises (from HALCON's error code table).
ERROR_TEXTS: dict[int, str] = {
    1501: "Wrong number of values of object parameter 1",
    2450: "Unknown handle or handle of wrong type",
    2894: "Key not found in dictionary",
    2895: "Incorrect tuple length in dict",
    2896: "Incorrect tuple type in dict",
    5200: "File not found",
    5212: "Error while writing to file",
    5217: "Wrong type for pixel (e.g. byte)",
    5234: "No file found in known graphic format",
    5235: "Wrong graphic format",
    7783: "DL: Inputs missing in input dict",
    7785: "DL: Invalid layer name",
    7788: "DL: Parameter is not available",
    7792: "DL: Some class ids are not unique",
    7801: "Error occurred while reading an ONNX model",
    7850: "DL: Heatmap is unsupported with the selected runtime",
    7851: "DL: Unsupported heatmap model type. The heatmap is only applicable for model type "
    "'classification'",
    7852: "DL: Unsupported heatmap method",
    7853: "DL: Wrong target class id for heatmap",
    7911: "DL: Unsupported generic parameter",
    7912: "DL: Operator does not support model",
    7914: "DL: Unsupported generic value(s)",
    9001: "Image to process has wrong gray value type",
    9004: "Wrong image format for operation (too big or too small)",
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
