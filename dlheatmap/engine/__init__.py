"""The engine: one interface from a model, images, targets and a method's needs to evidence.

:func:`gather` is the only place that chooses how evidence is computed:

- forward passes alone (onnxruntime) when nothing is differentiated (Eigen-CAM, Score-CAM);
- the onnxruntime engine (:mod:`~dlheatmap.engine.onnxruntime_engine`) where its gradient
  graph covers the request;
- the torch engine (:mod:`~dlheatmap.engine.torch_engine`) otherwise.

Both surfaces, the HALCON operators (:mod:`dlheatmap.heatmap`) and :func:`dlheatmap.explain`,
get their evidence here, so no method is computed two ways.
"""

from __future__ import annotations

import numpy as np

from dlheatmap.engine import onnxruntime_engine, torch_engine
from dlheatmap.engine.evidence import (
    SCORES,
    TOP_CLASS,
    Evidence,
    Needs,
    Targets,
    top_classes,
)
from dlheatmap.engine.forward import activation_pass, forward_scores
from dlheatmap.model import Model, pad_batch
from dlheatmap.params import ModelParams

ENGINES = ("auto", onnxruntime_engine.NAME, torch_engine.NAME)


class EngineUnavailableError(ValueError):
    """``engine='onnxruntime'`` was asked for where its gradient graph does not apply."""

__all__ = [
    "ENGINES",
    "SCORES",
    "TOP_CLASS",
    "EngineUnavailableError",
    "Evidence",
    "Needs",
    "Targets",
    "engine_for",
    "forward_scores",
    "gather",
    "top_classes",
]


def gather(
    model: Model,
    images: np.ndarray,
    needs: Needs,
    targets: Targets = TOP_CLASS,
    layer_tensor: str | None = None,
    params: ModelParams | None = None,
    *,
    score: str = "logit",
    engine: str = "auto",
    heatmap_mode: str | None = None,
) -> Evidence:
    """The evidence a method needs, batch by batch.

    Parameters
    ----------
    model : Model
    images : ndarray
        N x H x W x C float32 images in HALCON layout, already validated.
    needs : Needs
        What the method declares it needs.
    targets : Targets
        The classes to explain.
    layer_tensor : str, optional
        The tensor whose activation (and gradient) is needed; required when ``needs.layer``.
    params : ModelParams, optional
        The call's parameters (default: the handle's).
    score : {'logit', 'probability'}
        The class score differentiated.
    engine : {'auto', 'onnxruntime', 'torch'}
        'auto': onnxruntime where its gradient graph covers the request, torch otherwise.
        The other two insist; 'onnxruntime' raises :class:`EngineUnavailableError` (a
        ValueError) where it cannot be used.
    heatmap_mode : str, optional
        With ``needs.grad_cam_map``: have the engine also resize the map to the images and
        normalise it (one of ``onnxruntime_engine.HEAD_NORMALIZATIONS``), where it can.

    Returns
    -------
    Evidence
        ``cam_maps`` (and ``heatmaps``) are set where the engine computed the Grad-CAM map
        itself; otherwise the activation and gradients are.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if needs.layer and layer_tensor is None:
        raise ValueError("this method needs a layer")
    params = params or model.params
    device = model.device_for(params)
    if not needs.differentiates:
        one_batch = _forward_runner(model, targets, layer_tensor, device)
    else:
        one_batch = _gradient_runner(model, needs, targets, layer_tensor, params, score,
                                     engine, heatmap_mode)
    parts = []
    for start, stop, padded in model.batches(len(images), params):
        part = one_batch(pad_batch(images[start:stop], padded), start)
        parts.append(part.trimmed(stop - start) if padded > stop - start else part)
    evidence = Evidence.concatenate(parts)
    if needs.forward:
        evidence.images = images
        evidence.scores = lambda batch, chunk=None: forward_scores(model, batch, params, score,
                                                                    chunk)
    return evidence


def _forward_runner(model, targets, layer_tensor, device):
    return lambda batch, start: activation_pass(model, batch, start, targets, layer_tensor,
                                                device)


def engine_for(
    model: Model,
    needs: Needs,
    targets: Targets = TOP_CLASS,
    layer_tensor: str | None = None,
    params: ModelParams | None = None,
    score: str = "logit",
) -> str:
    """The engine 'auto' takes for this request: 'onnxruntime' or 'torch' (forward passes
    alone, where nothing is differentiated, are onnxruntime's)."""
    if not needs.differentiates:
        return onnxruntime_engine.NAME
    _, _, reason = _onnxruntime_session(model, needs, targets, layer_tensor,
                                        params or model.params, score)
    return onnxruntime_engine.NAME if reason is None else torch_engine.NAME


def _onnxruntime_session(model, needs, targets, layer_tensor, params, score):
    """(session, request, None) where the onnxruntime engine serves the request, else
    (None, request, why not)."""
    request = onnxruntime_engine.request_for(needs, targets, layer_tensor, score)
    session, reason = onnxruntime_engine.session(model, request, params)
    return session, request, reason


def _gradient_runner(model, needs, targets, layer_tensor, params, score, engine, heatmap_mode):
    """The per-batch function of the engine that serves this request."""
    session = reason = None
    if engine != torch_engine.NAME:
        session, request, reason = _onnxruntime_session(model, needs, targets, layer_tensor,
                                                        params, score)
    if engine == onnxruntime_engine.NAME and session is None:
        raise EngineUnavailableError(f"the onnxruntime engine cannot serve this request: {reason}")
    if session is not None:
        mode = heatmap_mode if heatmap_mode in onnxruntime_engine.HEAD_NORMALIZATIONS else None
        return lambda batch, start: onnxruntime_engine.run_batch(
            model, session, request, batch, start, targets, mode)
    device = model.device_for(params)  # torch returns the activation and its gradients
    return lambda batch, start: torch_engine.run_batch(
        model, batch, start, targets, layer_tensor, needs, score, device)
