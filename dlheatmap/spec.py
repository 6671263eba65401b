"""The operator surface as data, read from ``spec/operators.toml``.

The code reads from it: each operator's control parameters in HALCON's order (messages name
the samples parameter by position), apply_dl_model's result keys, the heatmap methods and
result key names, the GenParam keys with their methods, allowed values and defaults, and for
every model parameter its type, count, allowed values, minimum, maximum and settability, and
the defaults of image_range_min, image_range_max, runtime and gpu. Error codes are not read
from it: the operators raise them in code. The ``[[rules]]`` rows (each with the code a bad
call must raise) are read only by tests/test_conformance.py, one test per row, and by
:func:`rules_markdown`, which generates spec/validation.md.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

_CANDIDATES = (
    Path(__file__).with_name("spec") / "operators.toml",  # installed wheel
    Path(__file__).resolve().parents[1] / "spec" / "operators.toml",  # source checkout
)


@dataclass(frozen=True)
class ParameterSpec:
    """One model parameter of get_dl_model_param / set_dl_model_param."""

    name: str
    value_type: str  # 'integer', 'real', 'string' or 'device' (a DLDevice handle)
    settable: str  # 'never', 'always' or 'when_symbolic'
    multiple: bool = False
    count: int | None = None
    values: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    default: Any = None
    doc: str = ""


@dataclass(frozen=True)
class GenParamSpec:
    """One GenParam key of an operator."""

    name: str
    value_type: str
    default: Any
    methods: tuple[str, ...]
    values: tuple[Any, ...] | None = None
    min: float | None = None


@dataclass(frozen=True)
class OperatorSpec:
    name: str
    parameters: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    gen_params: dict[str, GenParamSpec] = field(default_factory=dict)

    def position(self, parameter: str) -> int:
        """HALCON's 1-based position of a control parameter (for 120n/130n/140n codes)."""
        return self.parameters.index(parameter) + 1


@dataclass(frozen=True)
class Spec:
    operators: dict[str, OperatorSpec]
    parameters: dict[str, ParameterSpec]
    rules: tuple[dict[str, Any], ...]


def spec_path() -> Path:
    for candidate in _CANDIDATES:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("spec/operators.toml not found beside the dlheatmap package")


@lru_cache(maxsize=1)
def load_spec() -> Spec:
    data = tomllib.loads(spec_path().read_text(encoding="utf-8"))
    operators = {}
    for name, entry in data["operators"].items():
        entry = dict(entry)
        gen_params = {
            key: GenParamSpec(
                name=key,
                value_type=value["value_type"],
                default=value["default"],
                methods=tuple(value["methods"]),
                values=tuple(value["values"]) if "values" in value else None,
                min=value.get("min"),
            )
            for key, value in entry.pop("gen_param", {}).items()
        }
        operators[name] = OperatorSpec(
            name=name,
            parameters=tuple(entry.pop("parameters")),
            extra=entry,
            gen_params=gen_params,
        )
    parameters = {
        name: ParameterSpec(
            name=name,
            value_type=entry["value_type"],
            settable=entry["settable"],
            multiple=entry.get("multiple", False),
            count=entry.get("count"),
            values=tuple(entry["values"]) if "values" in entry else None,
            min=entry.get("min"),
            max=entry.get("max"),
            default=entry.get("default"),
            doc=entry.get("doc", ""),
        )
        for name, entry in data["parameters"].items()
    }
    return Spec(operators=operators, parameters=parameters, rules=tuple(data["rules"]))


def operator_spec(name: str) -> OperatorSpec:
    return load_spec().operators[name]


# --- spec/validation.md: the rules as a human-readable table ---------------------------------

def rules_markdown() -> str:
    """spec/validation.md: every validation rule and model parameter of the spec as tables.

    Generated, never edited by hand: ``python -m dlheatmap.spec --markdown``.
    """
    from dlheatmap.errors import error_text

    spec = load_spec()
    lines = [
        "# Validation rules",
        "",
        "<!-- Generated from spec/operators.toml by `python -m dlheatmap.spec --markdown`;",
        "     do not edit. tests/test_conformance.py fails when this file is out of date. -->",
        "",
        "Every wrong call raises `HOperatorError` with the code below and leaves the model",
        "handle's parameters and the caller's arguments unchanged. Codes 120n / 130n / 140n",
        "are HALCON's wrong type / value / number of values of control parameter n.",
        "Each row is a conformance test (tests/test_conformance.py).",
    ]
    by_operator: dict[str, list[dict[str, Any]]] = {}
    for rule in spec.rules:
        by_operator.setdefault(rule["operator"], []).append(rule)
    for operator, rules in by_operator.items():
        base = spec.operators.get(operator.removesuffix("_s"))
        signature = ", ".join(base.parameters) if base else ""
        lines += ["", f"## {operator}({signature})", "",
                  "| Rule | When | Code | HALCON text |", "|---|---|---|---|"]
        lines += [f"| `{rule['id']}` | {_cell(rule['when'])} | {rule['code']} | "
                  f"{_cell(error_text(rule['code']))} |"
                  for rule in sorted(rules, key=lambda rule: rule["id"])]
    lines += [*_parameter_table(spec), ""]
    return "\n".join(lines)


def _parameter_table(spec: Spec) -> list[str]:
    lines = ["", "## Model parameters (get_dl_model_param / set_dl_model_param)", "",
             "Setting a parameter that is not settable raises 7788; a value of the wrong type",
             "1203, outside the allowed values, below the minimum or above the maximum 1303, a",
             "wrong number of values 1403.", "",
             "| Parameter | Type | Values | Settable | Allowed | Min | Max |",
             "|---|---|---|---|---|---|---|"]
    for name, entry in spec.parameters.items():
        count = entry.count or ("one per class" if name.startswith("class_") else "any")
        values = f"tuple ({count})" if entry.multiple else "single"
        allowed = ", ".join(f"'{value}'" for value in entry.values) if entry.values else ""
        minimum = "" if entry.min is None else f"{entry.min:g}"
        maximum = "" if entry.max is None else str(entry.max)
        settable = {"when_symbolic": "where the ONNX file leaves the dimension symbolic"}.get(
            entry.settable, entry.settable)
        lines.append(f"| `{name}` | {entry.value_type} | {values} | {settable} | {allowed} | "
                     f"{minimum} | {maximum} |")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    """``python -m dlheatmap.spec --markdown`` prints spec/validation.md."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv != ["--markdown"]:
        print("usage: python -m dlheatmap.spec --markdown > spec/validation.md", file=sys.stderr)
        return 2
    sys.stdout.write(rules_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
