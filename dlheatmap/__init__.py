"""dlheatmap: HALCON's gen_dl_model_heatmap (Grad-CAM, Guided Grad-CAM) for ONNX classifiers.

The HALCON operators are available at the top level::

    import dlheatmap as dl
    model = dl.read_dl_model("classifier.onnx")
    res = dl.gen_dl_model_heatmap(model, [{"image": img}], "grad_cam", [], None)
"""

from dlheatmap.errors import HError, HOperatorError
from dlheatmap.model import Model
from dlheatmap.operators import (
    apply_dl_model,
    clear_dl_model,
    gen_dl_model_heatmap,
    gen_dl_model_heatmap_s,
    get_dl_model_param,
    get_dl_model_param_s,
    read_dl_model,
    set_dl_model_param,
)

__version__ = "0.1.0"

__all__ = [
    "HError",
    "HOperatorError",
    "Model",
    "apply_dl_model",
    "clear_dl_model",
    "gen_dl_model_heatmap",
    "gen_dl_model_heatmap_s",
    "get_dl_model_param",
    "get_dl_model_param_s",
    "read_dl_model",
    "set_dl_model_param",
]
