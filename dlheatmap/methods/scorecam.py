"""Score-CAM (Wang et al., CVPR workshops 2020)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dlheatmap.engine.evidence import Evidence, Needs
from dlheatmap.methods.base import CAMMethod, register
from dlheatmap.methods.postprocess import upsample

# images N x H x W x C -> class scores N x classes
ScoreFunction = Callable[[np.ndarray], np.ndarray]

DEFAULT_BATCH = 64


@register
class ScoreCAM(CAMMethod):
    """Channel weight = the class score of the image masked by that channel.

    Each channel's activation is upsampled to the image size (bilinear, half-pixel centres),
    min-max normalised to [0, 1] (a constant channel gives an all-zero mask) and multiplied
    into every channel of the image; the class score of that masked image weighs the channel.
    No gradients; one forward pass per channel and sample, batched.

    Parameters
    ----------
    channel_softmax : bool
        False (default, the paper's algorithm and its authors' code): the weight is the score
        itself; used with ``score='probability'`` (the default for this method) it is the
        class probability of the masked image. True: the weights are the softmax of the
        scores over the channels (pytorch-grad-cam does this with logits).
    batch : int
        Masked images per onnxruntime run when the graph has a dynamic batch dimension
        (default 64); a graph with a fixed batch runs in its own batch size.
    """

    name = "score_cam"
    title = "Score-CAM"
    needs = Needs(activations=True, forward=True)
    default_score = "probability"

    def __init__(self, channel_softmax: bool = False, batch: int = DEFAULT_BATCH):
        if int(batch) < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.channel_softmax = channel_softmax
        self.batch = int(batch)

    def compute(self, evidence: Evidence) -> np.ndarray:
        return self.maps(evidence.activations, evidence.images, evidence.targets,
                         lambda batch: evidence.scores(batch, self.batch))

    def maps(
        self,
        activations: np.ndarray,
        images: np.ndarray,
        targets: np.ndarray,
        scores: ScoreFunction,
    ) -> np.ndarray:
        """Maps [N, T, h, w] for activations [N, C, h, w], images [N, H, W, C'] and class
        indices ``targets`` [N, T]; ``scores`` runs a batch of images through the model."""
        weights = self.channel_scores(activations, images, targets, scores)  # [N, C, T]
        if self.channel_softmax:
            shifted = weights - weights.max(axis=1, keepdims=True)
            weights = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        return np.einsum("nct,nchw->nthw", weights, activations.astype(np.float64)).astype(
            np.float32)

    def channel_scores(self, activations, images, targets, scores) -> np.ndarray:
        """Target scores of every masked image, [N, C, T]; sample-channel pairs are batched
        together, ``batch`` masked images at a time."""
        count, channels = activations.shape[:2]
        height, width = images.shape[1:3]
        flat = activations.reshape(count * channels, *activations.shape[2:])
        result = np.empty((count * channels, targets.shape[1]), np.float32)
        for start in range(0, len(flat), self.batch):
            stop = min(start + self.batch, len(flat))
            masks = self.masks(flat[start:stop], height, width)
            owners = np.arange(start, stop) // channels
            output = scores(images[owners] * masks[..., None])
            result[start:stop] = np.take_along_axis(output, targets[owners], axis=1)
        return result.reshape(count, channels, -1)

    @staticmethod
    def masks(maps: np.ndarray, height: int, width: int) -> np.ndarray:
        """[M, h, w] activation maps as [M, height, width] masks in [0, 1]."""
        masks = upsample(maps, height, width)
        low = masks.min(axis=(1, 2), keepdims=True)
        span = masks.max(axis=(1, 2), keepdims=True) - low
        return np.where(span > 0, (masks - low) / np.where(span > 0, span, 1), 0).astype(
            np.float32)
