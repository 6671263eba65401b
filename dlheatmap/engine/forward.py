"""Forward passes only, through onnxruntime: class scores of many (perturbed) images and a
layer's activations. What the gradient-free methods and the metrics need."""

from __future__ import annotations

import numpy as np

from dlheatmap.engine.evidence import SCORES, Evidence, Targets
from dlheatmap.model import Model, pad_batch
from dlheatmap.params import ModelParams
from dlheatmap.runtime.devices import Device


def forward_scores(
    model: Model,
    images: np.ndarray,
    params: ModelParams,
    score: str = "probability",
    chunk: int | None = None,
) -> np.ndarray:
    """Class scores of many images through onnxruntime, batch by batch.

    Parameters
    ----------
    model : Model
    images : ndarray
        N x H x W x C float32 images in HALCON layout, already validated.
    params : ModelParams
        The call's parameters (``batch_size`` is the default chunk).
    score : {'probability', 'logit'}
        'probability': the confidences apply_dl_model reports. 'logit': the tensor the
        gradient methods differentiate (the input of a final Softmax, else the output).
    chunk : int, optional
        Images per run for a graph with a dynamic batch dimension. A graph with a fixed batch
        runs in its own batch size, the last batch padded with zero images.

    Returns
    -------
    ndarray, float32, [N, classes]

    Raises
    ------
    ValueError
        For an unknown ``score`` (callers validate it first, with HALCON codes).
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    fixed = model.info.image_input.batch
    size = fixed or max(1, chunk or params.batch_size)
    device = model.device_for(params)
    parts = []
    for start in range(0, len(images), size):
        batch = images[start : start + size]
        padded = pad_batch(batch, size) if fixed else batch
        parts.append(_batch_scores(model, padded, score, device)[: len(batch)])
    return np.concatenate(parts) if parts else np.empty((0, model.info.num_classes), np.float32)


def _batch_scores(model: Model, images: np.ndarray, score: str, device: Device) -> np.ndarray:
    tensor = model.info.score_tensor
    if score == "probability" or tensor in (None, model.info.output_name):
        output = model.run(images, (), device)[0]
        if score == "probability":
            return model.probabilities(output)
    else:
        output = model.run(images, (tensor,), device)[1]
    return output.reshape(len(output), -1).astype(np.float32, copy=False)


def activation_pass(model: Model, images: np.ndarray, start: int, targets: Targets,
                    layer_tensor: str | None, device: Device) -> Evidence:
    """One batch's probabilities, targets and (if ``layer_tensor``) activations."""
    extra = () if layer_tensor is None else (layer_tensor,)
    output, *activation = model.run(images, extra, device)
    probabilities = model.probabilities(output)
    return Evidence(probabilities, targets(probabilities, start),
                    activations=activation[0] if activation else None)
