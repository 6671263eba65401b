"""dlheatmap: HALCON's gen_dl_model_heatmap (Grad-CAM, Guided Grad-CAM) for ONNX classifiers.

The HALCON operators are available at the top level::

    import dlheatmap as dl
    model = dl.read_dl_model("classifier.onnx")
    res = dl.gen_dl_model_heatmap(model, [{"image": img}], "grad_cam", [], None)
"""

from dlheatmap.errors import HError, HOperatorError
from dlheatmap.imaging import read_image, write_image
from dlheatmap.model import Model
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
from dlheatmap.runtime.devices import DLDevice

__version__ = "0.1.0"

__all__ = [
    "DLDevice",
    "HError",
    "HOperatorError",
    "Model",
    "apply_dl_model",
    "clear_dl_model",
    "create_dl_preprocess_param",
    "create_dl_preprocess_param_from_model",
    "gen_dl_model_classification_heatmap",
    "gen_dl_model_heatmap",
    "gen_dl_model_heatmap_s",
    "gen_dl_samples_from_images",
    "get_dl_device_param",
    "get_dl_model_param",
    "get_dl_model_param_s",
    "optimize_dl_model_for_inference",
    "preprocess_dl_samples",
    "query_available_dl_devices",
    "read_dl_model",
    "read_image",
    "set_dl_model_param",
    "write_image",
]

# The Pythonic API beside the HALCON operators. The function takes its module's name in the
# package namespace; ``from dlheatmap.explain import ...`` still reaches the module.
from dlheatmap.explain import Explanation, explain

__all__ += ["Explanation", "explain"]
