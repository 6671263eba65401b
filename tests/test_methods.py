"""Every method of dlheatmap.explain against its paper's formula and against peer libraries.

Truths used:
- the papers' formulas written out here in numpy, on activations and gradients taken with plain
  torch autograd from the ONNX graph converted to torch by onnx2torch directly (not through
  dlheatmap), and, for Score-CAM, class scores from a plain onnxruntime session;
- captum (LayerGradCam, Saliency, GuidedBackprop, GuidedGradCam) and pytorch-grad-cam
  (GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, HiResCAM, ScoreCAM, EigenCAM) on that module.
Maps are compared at the layer's resolution (before upsampling and normalisation), where the
peers' resizing conventions (OpenCV, align_corners) play no part; the upsampling and
normalisation are checked separately against a numpy bilinear resize.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import dlheatmap as dl
from dlheatmap.explain import explain
from dlheatmap.methods import EigenCAM, GradCAM, Saliency, ScoreCAM
from tests import models
from tests.reference import bilinear_resize, converted_module, nchw, producing

LAYER = "/7/Conv"  # the tiny CNN's last convolution (16 x 16); its ReLU is "/8/Relu"
RELU = "/8/Relu"


# --- references ----------------------------------------------------------------------------

def layer_grads(module, layer_module, images, targets, score="logit"):
    """Activations A [N, C, h, w] and d score(target) / dA with plain autograd."""
    store = {}
    handle = layer_module.register_forward_hook(lambda m, i, out: store.setdefault("a", out))
    try:
        output = module(nchw(images))
    finally:
        handle.remove()
    activation = store["a"]
    if score == "probability":
        output = torch.softmax(output, dim=1)
    chosen = output.gather(1, torch.from_numpy(targets)[:, None]).sum()
    (grads,) = torch.autograd.grad(chosen, activation)
    return activation.detach().numpy(), grads.numpy()


def input_grads(module, images, targets, score="logit"):
    x = nchw(images).requires_grad_(True)
    output = module(x)
    if score == "probability":
        output = torch.softmax(output, dim=1)
    output.gather(1, torch.from_numpy(targets)[:, None]).sum().backward()
    return x.grad.numpy().transpose(0, 2, 3, 1)


# --- the papers' formulas, per sample (A: C x h x w, G: C x h x w) -------------------------

def paper_grad_cam(A, G):
    """Selvaraju et al. eq. 1-2: alpha_k = mean_ij dY/dA^k_ij; L = sum_k alpha_k A^k."""
    return np.einsum("k,kij->ij", G.mean(axis=(1, 2)), A)


def paper_grad_cam_pp(A, G):
    """Chattopadhay et al. eq. 19 with relu(dY/dA) weights (eq. 7)."""
    C = A.shape[0]
    weights = np.zeros(C)
    for k in range(C):
        total = A[k].sum()
        denominator = 2 * G[k] ** 2 + total * G[k] ** 3
        alpha = np.divide(G[k] ** 2, denominator, out=np.zeros_like(G[k]),
                          where=denominator != 0)
        weights[k] = np.sum(alpha * np.maximum(G[k], 0))
    return np.einsum("k,kij->ij", weights, A)


def paper_xgrad_cam(A, G):
    """Fu et al. eq. 9: alpha_k = sum_ij (A^k_ij / sum_ab A^k_ab) dY/dA^k_ij."""
    weights = np.array([(a * g).sum() / a.sum() if a.sum() != 0 else 0.0
                        for a, g in zip(A, G, strict=True)])
    return np.einsum("k,kij->ij", weights, A)


def paper_layer_cam(A, G):
    """Jiang et al. eq. 4-5: M = sum_k relu(g^k) * A^k, element-wise."""
    return sum(np.maximum(g, 0) * a for a, g in zip(A, G, strict=True))


def paper_hires_cam(A, G):
    """Draelos and Carin: M = sum_k g^k * A^k, element-wise (no averaging)."""
    return sum(g * a for a, g in zip(A, G, strict=True))


def paper_eigen_cam(A, centre=False):
    """Muhammad and Yeasin: the activations (positions x channels) projected on their first
    right singular vector (numpy's SVD); sign made to agree with the channel-summed
    activation."""
    M = A.reshape(A.shape[0], -1).T.astype(np.float64)
    if centre:
        M = M - M.mean(axis=0)
    _, _, vt = np.linalg.svd(M, full_matrices=False)
    projection = M @ vt[0]
    if projection @ A.sum(axis=0).ravel() < 0:
        projection = -projection
    return projection.reshape(A.shape[1:])


PAPER = {
    "grad_cam": paper_grad_cam,
    "grad_cam_plus_plus": paper_grad_cam_pp,
    "xgrad_cam": paper_xgrad_cam,
    "layer_cam": paper_layer_cam,
    "hires_cam": paper_hires_cam,
}


def close_to(ours, theirs, rel=1e-4):
    """Per map: max |difference| <= rel x the reference's peak magnitude (an all-zero
    reference, e.g. Guided Grad-CAM of a negative Grad-CAM, must be matched exactly)."""
    theirs = np.asarray(theirs)
    assert np.abs(theirs).max() > 0
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=rel * np.abs(b).max())


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_setup(tiny_path):
    path = tiny_path
    model = dl.read_dl_model(path)
    images = np.random.default_rng(7).standard_normal((3, 32, 32, 3)).astype(np.float32)
    targets = np.array([0, 2, 3])
    return path, model, converted_module(path, frozen=False), images, targets


# --- formulas --------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [LAYER, RELU])
@pytest.mark.parametrize("name", sorted(PAPER))
def test_cam_methods_follow_their_papers(tiny_setup, name, layer):
    _path, model, module, images, targets = tiny_setup
    tensor = model.info.by_name[layer].output
    A, G = layer_grads(module, producing(module, tensor), images, targets)
    expected = np.stack([PAPER[name](a, g) for a, g in zip(A, G, strict=True)])
    result = explain(model, images, name, targets=targets, layer=layer, upsample=False,
                     normalize="none")
    assert result.layer == layer and result.layer_maps.shape == (3, 1, 16, 16)
    close_to(result.layer_maps[:, 0], expected)
    np.testing.assert_array_equal(result.heatmaps, result.layer_maps)


def test_probability_score_differentiates_the_softmax(tiny_setup):
    _path, model, module, images, targets = tiny_setup
    A, G = layer_grads(module, producing(module, model.info.by_name[LAYER].output), images,
                       targets, score="probability")
    expected = np.stack([paper_grad_cam(a, g) for a, g in zip(A, G, strict=True)])
    result = explain(model, images, "grad_cam", targets=targets, score="probability",
                     upsample=False, normalize="none")
    close_to(result.layer_maps[:, 0], expected)


def test_eigen_cam_on_a_wide_layer():
    """More channels than positions: the positions x positions route gives the same map."""
    A = np.random.default_rng(2).random((2, 40, 3, 4)).astype(np.float32)
    for centre in (False, True):
        ours = EigenCAM(centre=centre).map(A)
        close_to(ours, np.stack([paper_eigen_cam(a, centre) for a in A]), rel=1e-6)


@pytest.mark.parametrize("centre", [False, True])
def test_eigen_cam_is_the_first_principal_projection(tiny_setup, centre):
    _path, model, module, images, targets = tiny_setup
    A, _ = layer_grads(module, producing(module, model.info.by_name[RELU].output), images,
                       targets)
    result = explain(model, images, EigenCAM(centre=centre), targets=[[0, 1]] * 3, layer=RELU,
                     upsample=False, normalize="none")
    expected = np.stack([paper_eigen_cam(a, centre) for a in A])
    close_to(result.layer_maps[:, 0], expected, rel=1e-4)
    np.testing.assert_array_equal(result.layer_maps[:, 0], result.layer_maps[:, 1])
    if not centre:  # non-negative activations: the uncentred projection is non-negative
        assert (result.layer_maps >= -1e-6 * np.abs(result.layer_maps).max()).all()


def _session_probabilities(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": np.ascontiguousarray(images.transpose(0, 3, 1, 2))})[0]
    return logits, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


@pytest.mark.parametrize("channel_softmax", [False, True])
def test_score_cam_follows_its_paper(tiny_setup, channel_softmax):
    """Masks: each channel upsampled (numpy bilinear) and min-max normalised; weight: the
    class probability of image x mask (paper), or the softmax over channels of the class
    logits (channel_softmax); scores from a plain onnxruntime session."""
    path, model, module, images, targets = tiny_setup
    A, _ = layer_grads(module, producing(module, model.info.by_name[RELU].output), images,
                       targets)
    expected = []
    for image, acts, target in zip(images, A, targets, strict=True):
        masks = bilinear_resize(acts.astype(np.float64), 32, 32)
        low = masks.min(axis=(1, 2), keepdims=True)
        span = masks.max(axis=(1, 2), keepdims=True) - low
        masks = np.where(span > 0, (masks - low) / np.where(span > 0, span, 1), 0)
        logits, probs = _session_probabilities(path, (image[None] * masks[..., None]).astype(
            np.float32))
        if channel_softmax:
            weights = np.exp(logits[:, target] - logits[:, target].max())
            weights /= weights.sum()
        else:
            weights = probs[:, target]
        expected.append(np.einsum("k,kij->ij", weights, acts))
    method = ScoreCAM(channel_softmax=channel_softmax, batch=7)  # batches across samples
    result = explain(model, images, method, targets=targets, layer=RELU, upsample=False,
                     normalize="none", score="logit" if channel_softmax else None)
    close_to(result.layer_maps[:, 0], np.stack(expected), rel=1e-4)


@pytest.mark.parametrize("reduce", ["abs_max", "max"])
def test_saliency_reduces_the_input_gradient_over_channels(tiny_setup, reduce):
    _path, model, module, images, targets = tiny_setup
    grads = input_grads(module, images, targets)
    expected = np.abs(grads).max(axis=-1) if reduce == "abs_max" else grads.max(axis=-1)
    result = explain(model, images, Saliency(reduce=reduce), targets=targets,
                     normalize="none")
    assert result.kind == "map" and result.layer is None and result.layer_maps is None
    close_to(result.heatmaps[:, 0], expected, rel=1e-5)


# --- upsampling and normalisation --------------------------------------------------------------

@pytest.mark.parametrize("mode", ["max", "minmax", "abs_max", "relu", "none"])
def test_maps_are_upsampled_then_normalised(tiny_setup, mode):
    _path, model, _module, images, _targets = tiny_setup
    result = explain(model, images, "grad_cam", targets=[[0, 1]] * 3, normalize=mode)
    up = bilinear_resize(result.layer_maps.astype(np.float64), 32, 32)
    for maps, heat in zip(up.reshape(-1, 32, 32), result.heatmaps.reshape(-1, 32, 32),
                          strict=True):
        if mode in ("max", "relu"):
            maps = np.maximum(maps, 0)
        if mode == "max":  # a map without positive values stays all zero
            maps = maps / maps.max() if maps.max() > 0 else maps
        elif mode == "minmax":
            maps = (maps - maps.min()) / (maps.max() - maps.min())
        elif mode == "abs_max":
            maps = maps / np.abs(maps).max()
        np.testing.assert_allclose(heat, maps, rtol=0, atol=1e-5 * max(1, np.abs(maps).max()))


def test_normalisation_never_divides_by_zero():
    maps = np.stack([np.zeros((4, 4)), -np.ones((4, 4)), np.full((4, 4), 3.0)])
    for mode in ("max", "minmax", "abs_max"):
        out = dl.methods.normalize(maps, mode)
        assert np.isfinite(out).all()
    assert not dl.methods.normalize(maps, "max")[:2].any()
    assert not dl.methods.normalize(maps, "minmax").any()  # constant maps: nothing to scale
    eps = dl.methods.normalize(np.array([[[0.0, 2.0]]]), "max", eps=2.0)
    np.testing.assert_allclose(eps, [[[0.0, 0.5]]])


# --- peers: pytorch-grad-cam -----------------------------------------------------------------

def peer_layer_cam(cam_class, module, layer_module, images, targets):
    """pytorch-grad-cam's map at the layer's resolution (before its ReLU, scaling and OpenCV
    resize), from its own activation and gradient hooks."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module.requires_grad_(True)  # its gradient hooks need outputs that require grad
    cam = cam_class(model=module, target_layers=[layer_module])
    try:
        x = nchw(images)
        outputs = cam.activations_and_grads(x)
        chosen = [ClassifierOutputTarget(int(t)) for t in targets]
        grads = None
        if cam.uses_gradients:
            sum(t(o) for t, o in zip(chosen, outputs, strict=True)).backward()
            grads = cam.activations_and_grads.gradients[0].numpy()
        activations = cam.activations_and_grads.activations[0].numpy()
        return cam.get_cam_image(x, layer_module, chosen, activations, grads, False)
    finally:
        cam.activations_and_grads.release()


@pytest.mark.parametrize("name,peer", [
    ("grad_cam", "GradCAM"), ("xgrad_cam", "XGradCAM"), ("layer_cam", "LayerCAM"),
    ("hires_cam", "HiResCAM"),
])
def test_cam_methods_match_pytorch_grad_cam(tiny_setup, name, peer):
    import pytorch_grad_cam

    _path, model, module, images, targets = tiny_setup
    layer_module = producing(module, model.info.by_name[RELU].output)
    theirs = peer_layer_cam(getattr(pytorch_grad_cam, peer), module, layer_module, images,
                            targets)
    ours = explain(model, images, name, targets=targets, layer=RELU, upsample=False,
                   normalize="none").layer_maps[:, 0]
    close_to(ours, theirs, rel=1e-4)


def test_grad_cam_plus_plus_matches_pytorch_grad_cam():
    """pytorch-grad-cam adds 1e-6 to alpha's denominator 2g^2 + sum(A) g^3. With the tiny
    CNN's gradients (|g| < 1e-3, so g^2 < 1e-6) that epsilon dominates, so the comparison
    uses the same architecture with its last layer scaled by 1e3 (|g| ~ 0.1 to 1), where the
    epsilon is negligible; the formula itself is checked on the small gradients above."""
    import pytorch_grad_cam

    module, path = models.exported_cnn(head_scale=1e3)
    model = dl.read_dl_model(path)
    images = np.random.default_rng(8).standard_normal((3, 32, 32, 3)).astype(np.float32)
    targets = np.array([1, 0, 3])
    layer_module = module[8]  # the ReLU after the last convolution: ONNX node /8/Relu
    theirs = peer_layer_cam(pytorch_grad_cam.GradCAMPlusPlus, module, layer_module, images,
                            targets)
    ours = explain(model, images, "grad_cam_plus_plus", targets=targets, layer=RELU,
                   upsample=False, normalize="none").layer_maps[:, 0]
    close_to(ours, theirs, rel=1e-3)


def test_eigen_cam_matches_pytorch_grad_cam_up_to_sign(tiny_setup):
    """pytorch-grad-cam centres the activations before the SVD and leaves the sign to the
    SVD routine: compare with centre=True, after aligning signs."""
    import pytorch_grad_cam

    _path, model, module, images, targets = tiny_setup
    layer_module = producing(module, model.info.by_name[RELU].output)
    theirs = peer_layer_cam(pytorch_grad_cam.EigenCAM, module, layer_module, images, targets)
    ours = explain(model, images, EigenCAM(centre=True), layer=RELU, upsample=False,
                   normalize="none").layer_maps[:, 0]
    signs = np.sign((ours * theirs).sum(axis=(1, 2)))[:, None, None]
    close_to(ours, signs * theirs, rel=1e-4)


@pytest.mark.parametrize("align_corners_quirk", [False, True])
def test_score_cam_matches_pytorch_grad_cam(tiny_setup, monkeypatch, align_corners_quirk):
    """pytorch-grad-cam's ScoreCAM weighs channels by the softmax over channels of the class
    logits (dlheatmap: channel_softmax=True, score='logit') and upsamples its masks with
    align_corners=True (UpsamplingBilinear2d), where dlheatmap uses half-pixel centres. With
    that quirk replaced by half-pixel centres the maps agree to float precision; with it, to
    about 1% of the peak."""
    import pytorch_grad_cam

    if not align_corners_quirk:
        monkeypatch.setattr(torch.nn, "UpsamplingBilinear2d", lambda size: torch.nn.Upsample(
            size=size, mode="bilinear", align_corners=False))
    _path, model, module, images, targets = tiny_setup
    layer_module = producing(module, model.info.by_name[RELU].output)
    with torch.no_grad():
        theirs = peer_layer_cam(pytorch_grad_cam.ScoreCAM, module, layer_module, images,
                                targets)
    ours = explain(model, images, ScoreCAM(channel_softmax=True), targets=targets, layer=RELU,
                   score="logit", upsample=False, normalize="none").layer_maps[:, 0]
    close_to(ours, theirs, rel=1e-2 if align_corners_quirk else 1e-4)


# --- peers: captum -----------------------------------------------------------------------------

def test_grad_cam_matches_captum(tiny_setup):
    from captum.attr import LayerGradCam

    _path, model, module, images, targets = tiny_setup
    layer_module = producing(module, model.info.by_name[LAYER].output)
    theirs = LayerGradCam(module, layer_module).attribute(
        nchw(images), target=torch.from_numpy(targets), relu_attributions=False)
    ours = explain(model, images, "grad_cam", targets=targets, upsample=False,
                   normalize="none").layer_maps[:, 0]
    close_to(ours, theirs[:, 0].detach().numpy())


@pytest.mark.parametrize("absolute", [True, False])
def test_saliency_matches_captum(tiny_setup, absolute):
    from captum.attr import Saliency as CaptumSaliency

    _path, model, module, images, targets = tiny_setup
    theirs = CaptumSaliency(module).attribute(nchw(images), target=torch.from_numpy(targets),
                                              abs=absolute)
    theirs = theirs.detach().numpy().max(axis=1)  # captum keeps channels; reduce by max
    reduce = "abs_max" if absolute else "max"
    ours = explain(model, images, Saliency(reduce=reduce), targets=targets, normalize="none")
    close_to(ours.heatmaps[:, 0], theirs, rel=1e-5)


def test_guided_backprop_matches_captum(tiny_setup):
    from captum.attr import GuidedBackprop

    _path, model, module, images, targets = tiny_setup
    theirs = GuidedBackprop(module).attribute(nchw(images), target=torch.from_numpy(targets))
    theirs = theirs.detach().numpy().transpose(0, 2, 3, 1)
    ours = explain(model, images, "guided_backprop", targets=targets)
    assert ours.kind == "image" and ours.heatmaps.shape == (3, 1, 32, 32, 3)
    close_to(ours.heatmaps[:, 0], theirs, rel=1e-5)


def test_guided_grad_cam_matches_captum(tiny_setup):
    """captum's GuidedGradCam (here with 'bilinear' upsampling: half-pixel centres, as
    dlheatmap's) applies the ReLU to the Grad-CAM map at the layer's resolution, before
    upsampling; dlheatmap (as its HALCON 'guided_grad_cam') applies it after. The two differ
    only where upsampling mixes layer pixels of both signs: there ReLU-after is smaller,
    ``relu(mix) <= mix(relu)``. So every pixel is checked against captum's own parts, guided
    backpropagation times its Grad-CAM map: captum's result composed ReLU first, dlheatmap's
    ReLU last; and both agree wherever the order makes no difference."""
    from captum.attr import GuidedBackprop, GuidedGradCam, LayerGradCam

    _path, model, module, images, targets = tiny_setup
    layer_module = producing(module, model.info.by_name[LAYER].output)
    x, target = nchw(images), torch.from_numpy(targets)
    theirs = GuidedGradCam(module, layer_module).attribute(x, target=target,
                                                           interpolate_mode="bilinear")
    theirs = theirs.detach().numpy().transpose(0, 2, 3, 1)
    guided = GuidedBackprop(module).attribute(x, target=target)
    guided = guided.detach().numpy().transpose(0, 2, 3, 1).astype(np.float64)
    raw = LayerGradCam(module, layer_module).attribute(x, target=target,
                                                       relu_attributions=False)
    raw = raw[:, 0].detach().numpy().astype(np.float64)
    relu_first = bilinear_resize(np.maximum(raw, 0), 32, 32)[..., None]
    relu_last = np.maximum(bilinear_resize(raw, 32, 32), 0)[..., None]
    close_to(theirs, guided * relu_first, rel=1e-5)  # captum is what it says, on all pixels

    ours = explain(model, images, "guided_grad_cam", targets=targets).heatmaps[:, 0]
    close_to(ours, guided * relu_last, rel=1e-5)  # every pixel
    same = np.isclose(relu_first, relu_last, rtol=1e-6, atol=1e-12)[..., 0]
    assert 0.5 < same.mean() < 1  # both kinds of pixel occur in this test
    close_to(np.where(same[..., None], ours, 0), np.where(same[..., None], theirs, 0),
             rel=1e-5)
    for a, b in zip(ours, theirs, strict=True):  # ReLU last never adds energy
        assert (np.abs(a) <= np.abs(b) + 1e-5 * np.abs(b).max()).all()


@pytest.mark.parametrize("layer", [None, "/4/Conv"])
def test_guided_grad_cam_equals_halcon_operator(tiny_setup, layer):
    """explain's 'guided_grad_cam' is HALCON's gen_dl_model_heatmap 'guided_grad_cam' (whose
    formula tests/test_heatmap.py checks against captum on every pixel): same model, images,
    class and layer, no normalisation on either side."""
    _path, model, _module, images, targets = tiny_setup
    ours = explain(model, images, "guided_grad_cam", targets=targets, layer=layer).heatmaps
    gen_param = {"target_conv_layer": layer} if layer else {}
    peaks = []
    for image, target, heat in zip(images, targets, ours[:, 0], strict=True):
        (result,) = dl.gen_dl_model_heatmap(model, [{"image": image}], "guided_grad_cam",
                                            [int(target)], gen_param)
        (halcon,) = result["heatmap_guided_grad_cam"].values()
        assert halcon.shape == heat.shape == image.shape
        peaks.append(np.abs(halcon).max())  # 0 where the class's Grad-CAM is all negative
        np.testing.assert_allclose(heat, halcon, rtol=0, atol=1e-6 * peaks[-1])
    assert max(peaks) > 0


def test_l2_gradients_only_rescale_grad_cam(tiny_setup):
    """eli5's L2-normalised gradients scale each map by 1 / ||g||."""
    _path, model, module, images, targets = tiny_setup
    A, G = layer_grads(module, producing(module, model.info.by_name[LAYER].output), images,
                       targets)
    norms = np.sqrt((G.astype(np.float64) ** 2).sum(axis=(1, 2, 3)))
    expected = np.stack([paper_grad_cam(a, g) for a, g in zip(A, G, strict=True)])
    ours = explain(model, images, GradCAM(l2_gradients=True), targets=targets, upsample=False,
                   normalize="none").layer_maps[:, 0]
    close_to(ours, expected / norms[:, None, None])
