"""HALCON's operators, a thin validating layer over dlheatmap's core."""

from dlheatmap.operators.confidence_ops import gen_dl_model_classification_heatmap
from dlheatmap.operators.device_ops import (
    get_dl_device_param,
    optimize_dl_model_for_inference,
    query_available_dl_devices,
)
from dlheatmap.operators.heatmap_ops import gen_dl_model_heatmap, gen_dl_model_heatmap_s
from dlheatmap.operators.model_ops import (
    apply_dl_model,
    clear_dl_model,
    get_dl_model_param,
    get_dl_model_param_s,
    read_dl_model,
    set_dl_model_param,
)

__all__ = [
    "apply_dl_model",
    "clear_dl_model",
    "gen_dl_model_classification_heatmap",
    "gen_dl_model_heatmap",
    "gen_dl_model_heatmap_s",
    "get_dl_device_param",
    "get_dl_model_param",
    "get_dl_model_param_s",
    "optimize_dl_model_for_inference",
    "query_available_dl_devices",
    "read_dl_model",
    "set_dl_model_param",
]
