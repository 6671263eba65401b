"""HALCON's preprocessing procedures.

Truths: the range mapping formula and the grey conversion weights written out in numpy here,
block means for known resizes, torchvision's Normalize for 'constant_values', and plain
onnxruntime on hand-preprocessed input for the whole chain.
"""

from __future__ import annotations

import numpy as np
import pytest

import dlheatmap.halcon as ha
from dlheatmap.errors import HOperatorError


def params(width=4, height=3, channels=3, low=-127.0, high=128.0, normalization="none",
           gen=None):
    return ha.create_dl_preprocess_param("classification", width, height, channels, low, high,
                                         normalization, "full_domain", [], [], [], gen)


def run(image, p):
    samples = ha.gen_dl_samples_from_images(image)
    ha.preprocess_dl_samples(samples, p)
    return samples[0]["image"]


@pytest.fixture
def rng():
    return np.random.default_rng(11)


# --- gen_dl_samples_from_images --------------------------------------------------------------

def test_samples_hold_only_the_image(rng):
    images = [rng.integers(0, 255, (5, 6), dtype=np.uint8), np.zeros((2, 3, 3), np.float32)]
    samples = ha.gen_dl_samples_from_images(images)
    assert [list(s) for s in samples] == [["image"], ["image"]]
    assert samples[0]["image"] is images[0] and samples[1]["image"] is images[1]
    (single,) = ha.gen_dl_samples_from_images(images[0])
    assert single["image"] is images[0]


@pytest.mark.parametrize("images,code", [([], 1501), ("picture.png", 1201),
                                         ([np.zeros(5)], 1201), ([np.zeros((0, 4))], 1201)])
def test_samples_refuse_non_images(images, code):
    with pytest.raises(HOperatorError) as info:
        ha.gen_dl_samples_from_images(images)
    assert info.value.error_code == code


# --- create_dl_preprocess_param ---------------------------------------------------------------

def test_param_dict_has_halcons_keys():
    p = params(224, 200, 1, 0.0, 1.0)
    assert p["model_type"] == "classification"
    assert (p["image_width"], p["image_height"], p["image_num_channels"]) == (224, 200, 1)
    assert (p["image_range_min"], p["image_range_max"]) == (0.0, 1.0)
    assert p["normalization_type"] == "none" and p["domain_handling"] == "full_domain"
    for key in ("ignore_class_ids", "set_background_id", "class_ids_background"):
        assert p[key] == []


@pytest.mark.parametrize("args,code", [
    (("detection", 4, 3, 3, 0, 1, "none", "full_domain"), 1301),
    (("classification", 0, 3, 3, 0, 1, "none", "full_domain"), 1302),
    (("classification", 4.5, 3, 3, 0, 1, "none", "full_domain"), 1202),
    (("classification", [4, 5], 3, 3, 0, 1, "none", "full_domain"), 1402),
    (("classification", 4, 3, 0, 0, 1, "none", "full_domain"), 1304),
    (("classification", 4, 3, 3, "low", 1, "none", "full_domain"), 1205),
    (("classification", 4, 3, 3, 1, 1, "none", "full_domain"), 1306),
    (("classification", 4, 3, 3, 0, float("inf"), "none", "full_domain"), 1306),
    (("classification", 4, 3, 3, 0, 1, "z_score", "full_domain"), 1307),
    (("classification", 4, 3, 3, 0, 1, "none", "some_domain"), 1308),
])
def test_param_validation_codes(args, code):
    with pytest.raises(HOperatorError) as info:
        ha.create_dl_preprocess_param(*args, [], [], [], [])
    assert info.value.error_code == code


@pytest.mark.parametrize("gen", [{"colour": 1}, {"augmentation": "maybe"},
                                 {"augmentation": "true"},
                                 {"mean_values_normalization": [1, 2]},
                                 {"deviation_values_normalization": [0.0]}])
def test_gen_param_validation(gen):
    with pytest.raises(HOperatorError) as info:
        params(gen=gen)
    assert info.value.error_code in (1212, 1312, 1412)


def test_constant_values_needs_means_and_deviations():
    with pytest.raises(HOperatorError) as info:
        params(normalization="constant_values", gen={"mean_values_normalization": [1.0]})
    assert info.value.error_code == 1312


def test_from_model_takes_the_models_parameters(tiny):
    ha.set_dl_model_param(tiny, "image_range_min", 0.0)
    ha.set_dl_model_param(tiny, "image_range_max", 1.0)
    p = ha.create_dl_preprocess_param_from_model(tiny, "none", "full_domain", [], [], [])
    assert (p["image_width"], p["image_height"], p["image_num_channels"]) == (
        ha.get_dl_model_param_s(tiny, "image_width"),
        ha.get_dl_model_param_s(tiny, "image_height"),
        ha.get_dl_model_param_s(tiny, "image_num_channels"))
    assert (p["image_range_min"], p["image_range_max"]) == (0.0, 1.0)


def test_from_model_validation(tiny):
    with pytest.raises(HOperatorError) as info:
        ha.create_dl_preprocess_param_from_model({}, "none", "full_domain", [], [], [])
    assert info.value.error_code == 2450
    with pytest.raises(HOperatorError) as info:
        ha.create_dl_preprocess_param_from_model(tiny, "nonsense", "full_domain", [], [], [])
    assert info.value.error_code == 1302
    with pytest.raises(HOperatorError) as info:
        ha.create_dl_preprocess_param_from_model(tiny, "constant_values", "full_domain", [], [],
                                                 {})
    assert info.value.error_code == 1306


# --- preprocess_dl_samples: grey values -------------------------------------------------------

@pytest.mark.parametrize("low,high", [(-127.0, 128.0), (0.0, 1.0), (-1.0, 1.0), (10.0, 20.0)])
def test_byte_range_mapping_formula(rng, low, high):
    image = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    expected = low + image.astype(np.float64) / 255.0 * (high - low)
    out = run(image, params(low=low, high=high))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-5)
    assert run(np.array([[[0, 255, 0]] * 4] * 3, np.uint8), params(low=low, high=high))[
        0, 0, 1] == pytest.approx(high)


def test_sixteen_bit_mapping_uses_the_full_16_bit_range(rng):
    image = rng.integers(0, 65536, (3, 4), dtype=np.uint16)
    out = run(image, params(channels=1, low=0.0, high=1.0))
    np.testing.assert_allclose(out, image / 65535.0, rtol=1e-6)


def test_real_images_are_not_scaled_with_none(rng):
    image = rng.normal(0.0, 50.0, (3, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(run(image, params()), image)


def test_all_channels_stretches_the_image_range(rng):
    image = rng.integers(30, 200, (3, 4, 3), dtype=np.uint8).astype(np.float64)
    out = run(image, params(normalization="all_channels", low=-1.0, high=1.0))
    lo, hi = image.min(), image.max()
    np.testing.assert_allclose(out, -1.0 + 2.0 * (image - lo) / (hi - lo), atol=1e-6)
    assert out.min() == pytest.approx(-1.0) and out.max() == pytest.approx(1.0)


def test_first_channel_takes_the_map_from_channel_0(rng):
    image = rng.uniform(0, 100, (3, 4, 3))
    out = run(image, params(normalization="first_channel", low=0.0, high=1.0))
    lo, hi = image[..., 0].min(), image[..., 0].max()
    np.testing.assert_allclose(out, (image - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    assert out[..., 0].min() == pytest.approx(0.0, abs=1e-7)
    assert out[..., 0].max() == pytest.approx(1.0)


def test_constant_image_stretches_to_the_middle():
    out = run(np.full((3, 4, 3), 77, np.uint8), params(normalization="all_channels",
                                                        low=0.0, high=10.0))
    np.testing.assert_array_equal(out, 5.0)


def test_constant_values_matches_torchvision_normalize(rng):
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("torchvision.transforms.functional")
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    image = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    gen = {"mean_values_normalization": [255 * m for m in mean],
           "deviation_values_normalization": [255 * s for s in std]}
    out = run(image, params(normalization="constant_values", gen=gen))
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    expected = functional.normalize(tensor, mean, std).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


# --- preprocess_dl_samples: size and channels --------------------------------------------------

def test_known_resize_is_the_block_mean_then_mapped(rng):
    image = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    blocks = image.reshape(3, 2, 4, 2, 3).mean(axis=(1, 3))
    out = run(image, params(width=4, height=3, low=0.0, high=255.0))
    np.testing.assert_allclose(out, blocks, rtol=1e-6)


def test_enlarging_interpolates_linearly():
    image = np.array([[0, 255]], np.uint8)  # 2 x 1 grey
    out = run(image, params(width=4, height=1, channels=1, low=0.0, high=1.0))
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]], atol=1e-7)


def test_grey_becomes_three_equal_channels(rng):
    image = rng.integers(0, 256, (3, 4), dtype=np.uint8)
    out = run(image, params(low=0.0, high=255.0))
    assert out.shape == (3, 4, 3)
    for channel in range(3):
        np.testing.assert_allclose(out[..., channel], image, rtol=1e-6)


def test_colour_becomes_grey_with_luminance_weights(rng):
    image = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8).astype(np.float64)
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    out = run(image.astype(np.uint8), params(channels=1, low=0.0, high=255.0))
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out, 0.299 * r + 0.587 * g + 0.114 * b, rtol=1e-6)


def test_alpha_channel_is_dropped(rng):
    image = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    out = run(image, params(low=0.0, high=255.0))
    np.testing.assert_allclose(out, image[..., :3], rtol=1e-6)


def test_other_keys_survive_and_float32_comes_out(rng):
    sample = {"image": rng.integers(0, 256, (10, 9, 3), dtype=np.uint8), "id": 17}
    ha.preprocess_dl_samples([sample], params())
    assert sample["id"] == 17
    assert sample["image"].dtype == np.float32 and sample["image"].shape == (3, 4, 3)


# --- preprocess_dl_samples: errors -------------------------------------------------------------

@pytest.mark.parametrize("image,code", [
    (np.zeros((3, 4, 3), np.int32), 9001),
    (np.zeros((3, 4, 5), np.uint8), 1301),
    (np.zeros((3, 4, 2), np.uint8), None),  # grey + alpha is fine
    (np.full((3, 4), np.nan, np.float32), 1301),
    (np.zeros((3, 4, 3, 1), np.uint8), 9004),
])
def test_bad_images(image, code):
    samples = [{"image": np.zeros((3, 4, 3), np.uint8)}, {"image": image}]
    first = samples[0]["image"]
    if code is None:
        ha.preprocess_dl_samples(samples, params())
        return
    with pytest.raises(HOperatorError) as info:
        ha.preprocess_dl_samples(samples, params())
    assert info.value.error_code == code
    assert samples[0]["image"] is first  # nothing changed when one sample fails


def test_missing_keys_are_2894():
    with pytest.raises(HOperatorError) as info:
        ha.preprocess_dl_samples([{"picture": np.zeros((2, 2))}], params())
    assert info.value.error_code == 2894
    p = params()
    del p["image_width"]
    with pytest.raises(HOperatorError) as info:
        ha.preprocess_dl_samples([{"image": np.zeros((2, 2), np.uint8)}], p)
    assert info.value.error_code == 2894


def test_edited_params_are_checked_again():
    p = params()
    p["normalization_type"] = "whatever"
    with pytest.raises(HOperatorError) as info:
        ha.preprocess_dl_samples([{"image": np.zeros((2, 2), np.uint8)}], p)
    assert info.value.error_code == 1302
    with pytest.raises(HOperatorError) as info:
        ha.preprocess_dl_samples("samples", params())
    assert info.value.error_code == 1201


# --- the whole chain against plain onnxruntime -------------------------------------------------

def test_chain_matches_onnxruntime_on_hand_preprocessed_input(tiny_path, rng):
    import onnxruntime

    model = ha.read_dl_model(str(tiny_path))
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)  # 2x / 3x the model's 32 x 32
    p = ha.create_dl_preprocess_param_from_model(model, "none", "full_domain", [], [], [])
    samples = ha.gen_dl_samples_from_images(image)
    ha.preprocess_dl_samples(samples, p)
    (result,) = ha.apply_dl_model(model, samples, [])

    blocks = image.astype(np.float64).reshape(32, 2, 32, 3, 3).mean(axis=(1, 3))
    x = (-127.0 + blocks * 255.0 / 255.0).astype(np.float32).transpose(2, 0, 1)[None]
    session = onnxruntime.InferenceSession(str(tiny_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0][0]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probabilities)
    assert result["classification_class_ids"] == order.tolist()
    np.testing.assert_allclose(result["classification_confidences"], probabilities[order],
                               rtol=1e-4, atol=1e-6)


def test_procedures_through_hdevengine_match_direct_calls(tiny, rng):
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    proc = ha.HDevProcedure.load_external("create_dl_preprocess_param_from_model")
    call = ha.HDevProcedureCall(proc)
    for name, value in (("DLModelHandle", tiny), ("NormalizationType", "none"),
                        ("DomainHandling", "full_domain"), ("SetBackgroundID", []),
                        ("ClassIDsBackground", []), ("GenParam", [])):
        call.set_input_control_param_by_name(name, value)
    call.execute()
    p = call.get_output_control_param_by_name("DLPreprocessParam")
    assert isinstance(p, list) and len(p) == 1  # control outputs are tuples

    gen = ha.HDevProcedureCall(ha.HDevProcedure.load_external("gen_dl_samples_from_images"))
    gen.set_input_iconic_param_by_index(1, image)
    gen.execute()
    samples = gen.get_output_control_param_by_index(1)
    pre = ha.HDevProcedureCall(ha.HDevProcedure.load_external("preprocess_dl_samples"))
    pre.set_input_control_param_by_name("DLSampleBatch", samples)
    pre.set_input_control_param_by_name("DLPreprocessParam", p)
    pre.execute()
    direct = run(image, ha.create_dl_preprocess_param_from_model(tiny, "none", "full_domain",
                                                                 [], [], []))
    np.testing.assert_array_equal(samples[0]["image"], direct)


def test_hdevengine_errors():
    with pytest.raises(ha.HDevEngineError):
        ha.HDevProcedure.load_external("train_dl_model")
    call = ha.HDevProcedureCall(ha.HDevProcedure.load_external("preprocess_dl_samples"))
    with pytest.raises(ha.HDevEngineError):
        call.set_input_control_param_by_name("Samples", [])
    call.set_input_control_param_by_name("DLSampleBatch", [{"x": 1}])
    call.set_input_control_param_by_name("DLPreprocessParam", params())
    with pytest.raises(ha.HDevEngineError) as info:
        call.execute()
    assert info.value.error_code == 2894  # HALCON's code from inside the procedure
    assert "2894" in str(info.value)
