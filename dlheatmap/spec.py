"""The operator surface as data, read from ``spec/operators.toml``.

The same file drives the operators' validation and the conformance tests, so the two cannot
drift apart.
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
    value_type: str  # 'integer', 'real' or 'string'
    settable: str  # 'never', 'always' or 'when_symbolic'
    multiple: bool = False
    count: int | None = None
    values: tuple[Any, ...] | None = None
    min: float | None = None
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
            default=entry.get("default"),
            doc=entry.get("doc", ""),
        )
        for name, entry in data["parameters"].items()
    }
    return Spec(operators=operators, parameters=parameters, rules=tuple(data["rules"]))


def operator_spec(name: str) -> OperatorSpec:
    return load_spec().operators[name]
