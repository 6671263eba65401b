"""What a job computes: the model, its settings, the preprocessing, the method and the display.

A :class:`JobConfig` is plain data, so that it travels to Ray actors and into the output
folder's ``job.json``; :func:`load_model` and :func:`preprocess_param` turn it into the model
handle and HALCON's preprocessing dict wherever the work runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlheatmap.errors import HOperatorError


class JobError(Exception):
    """A job that cannot run as asked (bad model, option or output folder): exit status 2."""


@dataclass(frozen=True)
class JobConfig:
    """Everything a worker needs to turn image files into heatmap pictures and result rows.

    Parameters mirror the command's options: ``model`` is the ONNX file; ``class_names``,
    ``range_min``, ``range_max``, ``runtime`` and ``batch_size`` are model parameters;
    ``normalization``, ``mean`` and ``deviation`` HALCON's preprocessing; ``method``,
    ``target_class`` and ``gen_param`` the heatmap; ``color_scheme`` and ``legend`` the picture.
    """

    model: str
    method: str = "grad_cam"
    class_names: list[str] | None = None
    range_min: float | None = None
    range_max: float | None = None
    runtime: str | None = None
    batch_size: int = 8
    normalization: str = "none"
    mean: list[float] | None = None
    deviation: list[float] | None = None
    target_class: int | None = None
    gen_param: dict[str, Any] = field(default_factory=dict)
    color_scheme: str = "jet"
    legend: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready data (``job.json``)."""
        return dataclasses.asdict(self)

    @property
    def target_classes(self) -> list[int]:
        """gen_dl_model_heatmap's TargetClasses: none, or the one class for every image."""
        return [] if self.target_class is None else [self.target_class]


def load_model(config: JobConfig):
    """The model handle with the job's parameters set.

    Raises
    ------
    JobError
        The file is missing, not a readable ONNX classifier, or a parameter is refused.
    """
    from dlheatmap.operators import read_dl_model, set_dl_model_param

    path = Path(config.model)
    if not path.is_file():
        raise JobError(f"model file not found: {path}")
    try:
        model = read_dl_model(path)
    except HOperatorError as exc:
        raise JobError(f"cannot read model {path}: {exc}") from None
    if model.info.model_type != "classification":
        raise JobError(f"{path} is a {model.info.model_type!r} model; dlheatmap explains "
                       "classification models (one image input, one [batch, classes] output)")
    settings: list[tuple[str, Any]] = []
    if config.class_names:
        settings.append(("class_names", list(config.class_names)))
    settings.extend(_range_settings(config, model.params.image_range_max))
    if config.runtime:
        settings.append(("runtime", config.runtime))
    for name, value in settings:
        try:
            set_dl_model_param(model, name, value)
        except HOperatorError as exc:
            raise JobError(f"--{name.replace('_', '-')}: {exc}") from None
    # One onnxruntime batch per heatmap call where the graph allows it; a graph with a fixed
    # batch size refuses (7788) and dlheatmap pads batches itself.
    with contextlib.suppress(HOperatorError):
        set_dl_model_param(model, "batch_size", config.batch_size)
    return model


def _range_settings(config: JobConfig, current_max: float) -> list[tuple[str, float]]:
    """range_min and range_max in an order that keeps the minimum below the maximum after
    each step: a range moved above the current maximum needs its new maximum first."""
    settings = [(name, value) for name, value in (("image_range_min", config.range_min),
                                                   ("image_range_max", config.range_max))
                if value is not None]
    if config.range_min is not None and config.range_min >= current_max:
        settings.reverse()
    return settings


def preprocess_param(model, config: JobConfig) -> dict:
    """HALCON's preprocessing parameters for the model and the job's normalization."""
    from dlheatmap.preprocess import create_dl_preprocess_param_from_model

    extra: dict[str, Any] = {}
    if config.mean is not None:
        extra["mean_values_normalization"] = list(config.mean)
    if config.deviation is not None:
        extra["deviation_values_normalization"] = list(config.deviation)
    try:
        return create_dl_preprocess_param_from_model(
            model, config.normalization, "full_domain", [], [], extra)
    except HOperatorError as exc:
        raise JobError(f"preprocessing options: {exc}") from None
