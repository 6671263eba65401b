"""Heatmap pictures: colour schemes, blending, legend, windows and PNG files.

Truths: matplotlib's 'jet' and 'hot' colour maps (a peer library), the scheme's defining end
colours, the 50/50 blending formula written out here, and pixel positions known by
construction for alignment.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import dlheatmap.halcon as ha
from dlheatmap.display import (
    COLOR_SCHEMES,
    Legend,
    colormap,
    guided_to_rgb,
    render_heatmap,
    to_display_rgb,
    write_png,
)
from dlheatmap.errors import HOperatorError

# --- colour schemes --------------------------------------------------------------------------

@pytest.mark.parametrize("scheme,tolerance", [("jet", 0.14), ("hot", 0.05)])
def test_schemes_follow_matplotlib(scheme, tolerance):
    matplotlib = pytest.importorskip("matplotlib")
    values = np.linspace(0.0, 1.0, 513)
    reference = matplotlib.colormaps[scheme](values)[:, :3]
    ours = colormap(values, scheme)
    assert np.abs(ours - reference).max() < tolerance
    assert np.abs(ours - reference).mean() < 0.03


def test_scheme_end_colours():
    np.testing.assert_allclose(colormap(0.0, "jet"), [0, 0, 0.5])  # dark blue
    np.testing.assert_allclose(colormap(1.0, "jet"), [0.5, 0, 0])  # dark red
    np.testing.assert_allclose(colormap(0.5, "jet"), [0.5, 1, 0.5])
    np.testing.assert_allclose(colormap(0.0, "hot"), [0, 0, 0])  # black
    np.testing.assert_allclose(colormap(1.0, "hot"), [1, 1, 1])  # white


@pytest.mark.parametrize("base", ["jet", "hot"])
def test_inverse_schemes_run_backwards(base):
    values = np.random.default_rng(2).uniform(0, 1, 50)
    np.testing.assert_allclose(colormap(values, f"inverse_{base}"), colormap(1 - values, base))


def test_values_outside_0_1_are_clipped():
    np.testing.assert_allclose(colormap([-3.0, 7.0], "jet"), colormap([0.0, 1.0], "jet"))
    with pytest.raises(ValueError):
        colormap(0.5, "rainbow")


# --- conversion for display ------------------------------------------------------------------

def test_display_rgb_of_each_pixel_type():
    grey16 = np.array([[0, 257, 65535]], np.uint16)
    np.testing.assert_array_equal(to_display_rgb(grey16)[0, :, 0], [0, 1, 255])
    real = np.array([[-127.0, 0.5, 128.0]])
    np.testing.assert_array_equal(to_display_rgb(real)[0, :, 1], [0, 128, 255])
    rgba = np.array([[[10, 20, 30, 40]]], np.uint8)
    np.testing.assert_array_equal(to_display_rgb(rgba)[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(to_display_rgb(np.full((2, 2), 3.0)), 128)


def test_guided_zero_is_mid_grey_and_signs_are_symmetric():
    guided = np.zeros((4, 4, 3))
    guided[1, 1] = [1.0, -1.0, 0.0]
    out = guided_to_rgb(guided)
    assert out[0, 0].tolist() == [128, 128, 128]
    assert out[1, 1].tolist() == [255, 1, 128]
    np.testing.assert_array_equal(guided_to_rgb(np.zeros((3, 3))), 128)


# --- pictures --------------------------------------------------------------------------------

def test_blend_is_half_image_half_colour():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    heat = rng.uniform(0, 1, (6, 5))
    picture = render_heatmap(image, heat, "map", "jet", None, min_size=1)
    matplotlib = pytest.importorskip("matplotlib")
    colours = matplotlib.colormaps["jet"](heat)[..., :3]
    # picture = 0.5 image + 0.5 * 255 * colour (within jet's difference to matplotlib).
    recovered = (picture.astype(float) - 0.5 * image) / (0.5 * 255)
    assert np.abs(recovered - colours).max() < 0.14
    zero = render_heatmap(image, np.zeros((6, 5)), "map", "jet", None, min_size=1)
    np.testing.assert_array_equal(zero, np.rint(0.5 * image + [0, 0, 0.5 * 255 * 0.5]))


def test_overlay_is_aligned_after_enlarging():
    image = np.zeros((10, 12), np.uint8)
    heat = np.zeros((10, 12))
    heat[2, 9] = 1.0
    picture = render_heatmap(image, heat, "map", "hot", None, min_size=120)
    assert picture.shape == (100, 120, 3)  # factor 10, no legend
    brightness = picture.astype(int).sum(axis=2)
    row, col = np.unravel_index(brightness.argmax(), brightness.shape)
    assert abs(row - 25) <= 5 and abs(col - 95) <= 5  # centre of source pixel (2, 9) * 10


def test_heatmap_of_another_size_is_stretched_onto_the_image():
    image = np.zeros((40, 80, 3), np.uint8)
    heat = np.zeros((4, 4))
    heat[0, 3] = 1.0  # top right corner of the map
    picture = render_heatmap(image, heat, "map", "hot", None, min_size=1)
    brightness = picture.astype(int).sum(axis=2)
    row, col = np.unravel_index(brightness.argmax(), brightness.shape)
    assert row < 10 and col >= 60


def test_legend_band_with_text_and_colour_bar():
    image = np.full((64, 64, 3), 90, np.uint8)
    legend = Legend("grad_cam", "scratch", 7, 0.875, "jet")
    assert legend.lines() == ["Grad-CAM (jet)", "Class: scratch (ID 7)", "Confidence: 87.50 %"]
    picture = render_heatmap(image, np.zeros((64, 64)), "map", "jet", legend, min_size=320)
    assert picture.shape[1] == 320 and picture.shape[0] > 320
    band = picture[320:]
    dark = (band.sum(axis=2) < 200).mean()
    assert 0.005 < dark < 0.5  # text is there, band is mostly white
    # The colour bar runs from blue (left) to red (right).
    bar_rows = np.where((np.abs(band[:, :, 0].astype(int) - band[:, :, 2]) > 100).any(axis=1))[0]
    row = band[bar_rows[len(bar_rows) // 2]]
    coloured = np.where(np.abs(row[:, 0].astype(int) - row[:, 2]) > 60)[0]
    left, right = row[coloured[0] + 2], row[coloured[-1] - 2]
    assert left[2] > left[0] and right[0] > right[2]


def test_guided_picture_has_no_colour_bar():
    guided = np.random.default_rng(1).normal(size=(32, 32, 3))
    picture = render_heatmap(np.zeros((32, 32, 3), np.uint8), guided, "image", "jet",
                             Legend("guided_grad_cam", "a", 0, None), min_size=320)
    assert picture.shape[0] > 320
    band = picture[320:].astype(int)
    assert (np.abs(band[:, :, 0] - band[:, :, 2]) < 30).all()  # only black text on white


def test_write_png_round_trip(tmp_path):
    picture = np.random.default_rng(3).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    path = write_png(picture, tmp_path / "deep" / "pic.png")
    with Image.open(path) as pil:
        assert pil.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(pil), picture)


# --- dev_display_dl_data and windows -----------------------------------------------------------

def _result(heat):
    return {"classification_class_ids": [3, 1], "classification_class_names": ["dent", "ok"],
            "classification_confidences": [0.75, 0.25],
            "heatmap_grad_cam": {"heatmap_image_class_3": heat}}


def test_dev_display_fills_windows_and_dump_window_writes_them(tmp_path):
    sample = {"image": np.zeros((16, 16, 3), np.float32)}
    heat = np.zeros((16, 16), np.float32)
    heat[4, 12] = 1.0
    windows = ha.create_dict()
    ha.dev_display_dl_data(sample, _result(heat), [], ["image", "heatmap_grad_cam"],
                           {"heatmap_color_scheme": "inverse_hot"}, windows)
    assert sorted(windows) == ["heatmap_grad_cam", "image"]
    window = ha.get_dict_tuple_s(windows, "heatmap_grad_cam")
    picture = ha.dump_window_image(window)
    assert picture.shape[1] == 320 and picture.shape[0] > 320
    ha.dump_window(window, "png", str(tmp_path / "heat"))
    with Image.open(tmp_path / "heat.png") as pil:
        np.testing.assert_array_equal(np.asarray(pil), picture)
    # Drawing again reuses the window, as HDevelop does.
    ha.dev_display_dl_data(sample, _result(heat), [], "heatmap_grad_cam",
                           {"display_legend": "false"}, windows)
    assert ha.get_dict_tuple_s(windows, "heatmap_grad_cam") is window
    assert ha.dump_window_image(window).shape == (320, 320, 3)


def test_dev_display_uses_dataset_class_names():
    sample = {"image": np.zeros((8, 8), np.uint8)}
    windows = {}
    info = {"class_ids": [1, 3], "class_names": ["good", "dented"]}
    heat = np.ones((8, 8), np.float32)
    ha.dev_display_dl_data(sample, _result(heat), info, "heatmap_grad_cam", [], windows)
    ha.dev_display_dl_data(sample, _result(heat), [], "heatmap_grad_cam", [], windows)
    # Different names in the legend give different pictures.
    first = ha.dump_window_image(windows["heatmap_grad_cam"])
    ha.dev_display_dl_data(sample, _result(heat), info, "heatmap_grad_cam", [], windows)
    assert not np.array_equal(first, ha.dump_window_image(windows["heatmap_grad_cam"]))


@pytest.mark.parametrize("keys,gen,code", [
    ("heatmap_grad_cam", {"heatmap_color_scheme": "viridis"}, 1305),
    ("heatmap_grad_cam", {"font": "big"}, 1305),
    ("segmentation", [], 1304),
    ("heatmap_guided_grad_cam", [], 2894),
])
def test_dev_display_errors(keys, gen, code):
    with pytest.raises(HOperatorError) as info:
        ha.dev_display_dl_data({"image": np.zeros((4, 4))}, _result(np.zeros((4, 4))), [], keys,
                               gen, {})
    assert info.value.error_code == code


def test_dump_window_errors(tmp_path):
    with pytest.raises(HOperatorError) as info:
        ha.dump_window_image("window")
    assert info.value.error_code == 2450
    windows = {}
    ha.dev_display_dl_data({"image": np.zeros((4, 4))}, _result(np.zeros((4, 4))), [], "image",
                           [], windows)
    with pytest.raises(HOperatorError) as info:
        ha.dump_window(windows["image"], "gif", str(tmp_path / "x"))
    assert info.value.error_code == 1302


def test_all_schemes_render():
    for scheme in COLOR_SCHEMES:
        picture = render_heatmap(np.zeros((8, 8)), np.linspace(0, 1, 64).reshape(8, 8), "map",
                                 scheme, None, min_size=8)
        assert picture.dtype == np.uint8 and picture.shape == (8, 8, 3)


# --- legend text: titles, and room for it on narrow pictures ---------------------------------

TITLES = {"grad_cam": "Grad-CAM", "guided_grad_cam": "Guided Grad-CAM",
          "grad_cam_plus_plus": "Grad-CAM++", "score_cam": "Score-CAM",
          "xgrad_cam": "XGrad-CAM", "layer_cam": "LayerCAM", "hires_cam": "HiResCAM",
          "eigen_cam": "Eigen-CAM", "saliency": "Saliency", "guided_backprop": "Guided Backprop"}


def test_every_method_has_its_human_title_in_the_legend():
    from dlheatmap.methods import METHODS

    assert set(METHODS) == set(TITLES)  # a new method needs a title here too
    for name, title in TITLES.items():
        assert Legend(name, "dent", 3, 0.5, "hot").lines()[0] == f"{title} (hot)"
        assert Legend(name, "dent", 3, None).lines() == [title, "Class: dent (ID 3)"]
    assert Legend("my_method", "a", 0, None).lines()[0] == "my method"  # CLI-only methods


def _ink(pixels: np.ndarray) -> np.ndarray:
    """Where black legend text (anti-aliased) lies on the white band."""
    return pixels.astype(int).sum(axis=-1) < 3 * 200


def _ink_width(text: str, size: int) -> int:
    """The ink width of ``text`` drawn alone by Pillow in the legend's font."""
    from PIL import ImageDraw, ImageFont

    canvas = Image.new("RGB", (40 * size, 3 * size), "white")
    ImageDraw.Draw(canvas).text((size, size), text, fill=(0, 0, 0),
                                font=ImageFont.load_default(size=size))
    columns = np.where(_ink(np.asarray(canvas)).any(axis=0))[0]
    return int(columns[-1] - columns[0] + 1)


@pytest.mark.parametrize("width", [40, 96])
def test_legend_of_a_narrow_picture_is_not_cut(width):
    """A tall, thin image (longer side >= 320, so not enlarged) is too narrow for its legend
    in the smallest font (11 px): the canvas grows so that the longest line shows in full and
    the colour bar's labels keep apart, and the picture itself is kept, centred."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (512, width, 3), dtype=np.uint8)
    heat = rng.uniform(0, 1, (512, width))
    legend = Legend("grad_cam_plus_plus", "ring", 1, 0.523, "jet")
    picture = render_heatmap(image, heat, "map", "jet", legend)
    plain = render_heatmap(image, heat, "map", "jet", None)
    offset = (picture.shape[1] - width) // 2
    np.testing.assert_array_equal(picture[:512, offset:offset + width], plain)
    assert (picture[:512, :offset] == 255).all() and (picture[:512, offset + width:] == 255).all()

    band = picture[512:]
    coloured = np.where((np.abs(band[..., 0].astype(int) - band[..., 2]) > 100).any(axis=1))[0]
    text, labels = _ink(band[:coloured[0] - 1]), _ink(band[coloured[-1] + 2:])
    columns = np.where(text.any(axis=0))[0]
    longest = max(_ink_width(line, 11) for line in legend.lines())
    assert columns[-1] - columns[0] + 1 == longest  # nothing cut off
    assert columns[-1] < picture.shape[1] - 3  # and a white margin after it

    low, high = _ink_width("0 (low)", 11), _ink_width("1 (high)", 11)
    label_columns = np.where(labels.any(axis=0))[0]
    low_end = label_columns[0] + low  # first column after "0 (low)"
    after = label_columns[label_columns >= low_end]
    assert after[0] >= low_end + 5  # a clear gap before "1 (high)"
    assert after[-1] - after[0] + 1 == high and after[-1] < picture.shape[1] - 3
