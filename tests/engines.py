"""The engine requests the tests make most often, each a one-line call of
:func:`dlheatmap.engine.gather` with the needs of a method family."""

from __future__ import annotations

import numpy as np

from dlheatmap.engine import Evidence, Needs, Targets, engine_for, gather
from dlheatmap.methods import HALCON_SCALINGS
from dlheatmap.model import Model
from dlheatmap.params import ModelParams

LAYER = Needs(activations=True, gradients=True)
GRAD_CAM_MAP = Needs(grad_cam_map=True)


def gather_layer(model: Model, images: np.ndarray, targets: Targets, layer: str,
                 params: ModelParams, score: str = "logit", engine: str = "auto") -> Evidence:
    """The layer's activation and gradients (what the CAM methods need)."""
    return gather(model, images, LAYER, targets, layer, params, score=score, engine=engine)


def gather_whole(model: Model, images: np.ndarray, targets: Targets, layer: str | None,
                 params: ModelParams, score: str = "logit", guided: bool = True,
                 engine: str = "torch") -> Evidence:
    """Input gradients (guided or plain) and, with a layer, its activation and gradients, from
    one pass over the whole graph."""
    needs = Needs(activations=layer is not None, gradients=layer is not None,
                  input_gradients="guided" if guided else "plain")
    return gather(model, images, needs, targets, layer, params, score=score, engine=engine)


def gather_map(model: Model, images: np.ndarray, targets: Targets, layer: str,
               params: ModelParams, scaling: str) -> Evidence | None:
    """Grad-CAM's map and heatmap computed by onnxruntime's gradient graph; None where the
    onnxruntime engine does not serve the model."""
    if engine_for(model, GRAD_CAM_MAP, targets, layer, params) != "onnxruntime":
        return None
    return gather(model, images, GRAD_CAM_MAP, targets, layer, params, engine="onnxruntime",
                  heatmap_mode=HALCON_SCALINGS[scaling])
