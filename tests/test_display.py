"""Heatmap pictures: colour schemes, blending, legend, windows and PNG files.

Truths: halcon-facts.md's lookup-table formulas written out here for all 256 values,
matplotlib's 'jet' (a peer library), HALCON's add_image formula written out here, the legend
lines and order of HALCON's procedure, and pixel positions known by construction.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import dlheatmap.halcon as ha
from dlheatmap.display import (
    COLOR_SCHEMES,
    GREEN,
    RED,
    WHITE,
    Legend,
    colormap,
    guided_to_rgb,
    heatmap_bytes,
    lookup_table,
    render_heatmap,
    to_display_rgb,
    write_png,
)
from dlheatmap.errors import HOperatorError

# --- colour schemes --------------------------------------------------------------------------

def _clip(values) -> np.ndarray:
    return np.clip(values, 0, 255)


def halcon_table(scheme: str) -> np.ndarray:
    """halcon-facts.md's formulas, written out per entry x = 0..255."""
    rows = []
    for x in range(256):
        if scheme == "jet":
            rgb = (383 - 4 * abs(x - 192), 383 - 4 * abs(x - 128), 383 - 4 * abs(x - 64))
        elif scheme == "inverse_jet":
            rgb = (383 - 4 * abs(x - 64), 383 - 4 * abs(x - 128), 383 - 4 * abs(x - 192))
        elif scheme == "hot":
            rgb = (3 * x, 3 * x - 255, 3 * x - 510)
        else:
            rgb = (765 - 3 * x, 510 - 3 * x, 255 - 3 * x)
        rows.append([min(255, max(0, value)) for value in rgb])
    return np.array(rows)


@pytest.mark.parametrize("scheme", COLOR_SCHEMES)
def test_lookup_tables_are_halcons_for_all_256_values(scheme):
    table = lookup_table(scheme)
    assert table.dtype == np.uint8 and table.shape == (256, 3)
    np.testing.assert_array_equal(table, halcon_table(scheme))
    # colormap of v applies the table to v mapped onto 0..255 and cut to bytes
    values = np.arange(256) / 255.0
    np.testing.assert_allclose(colormap(values, scheme) * 255, halcon_table(scheme), atol=1e-9)


def test_heatmap_bytes_clip_and_cut_fractions():
    np.testing.assert_array_equal(heatmap_bytes([-1.0, 0.0, 0.5, 0.999, 1.0, 7.0]),
                                  [0, 0, 127, 254, 255, 255])


def test_halcon_jet_is_close_to_matplotlibs_jet():
    matplotlib = pytest.importorskip("matplotlib")
    values = np.arange(256) / 255.0
    reference = matplotlib.colormaps["jet"](values)[:, :3]
    assert np.abs(colormap(values, "jet") - reference).max() < 0.14


def test_unknown_scheme_is_halcons_message():
    with pytest.raises(ValueError, match=r"Unknown color schema: rainbow\."):
        lookup_table("rainbow")


# --- conversion for display ------------------------------------------------------------------

def test_display_rgb_of_each_pixel_type():
    grey16 = np.array([[0, 257, 65535]], np.uint16)
    np.testing.assert_array_equal(to_display_rgb(grey16)[0, :, 0], [0, 1, 255])
    real = np.array([[-127.0, 0.5, 128.0]])
    np.testing.assert_array_equal(to_display_rgb(real)[0, :, 1], [0, 128, 255])
    rgba = np.array([[[10, 20, 30, 40]]], np.uint8)  # not 3 channels: the first, repeated
    np.testing.assert_array_equal(to_display_rgb(rgba)[0, 0], [10, 10, 10])
    two = np.array([[[0.0, 5.0], [2.0, 1.0]]])
    np.testing.assert_array_equal(to_display_rgb(two)[0, :, 0], [0, 102])
    np.testing.assert_array_equal(to_display_rgb(two)[0, 1], [102, 102, 102])
    np.testing.assert_array_equal(to_display_rgb(np.full((2, 2), 3.0)), 128)


def test_guided_zero_is_mid_grey_and_signs_are_symmetric():
    guided = np.zeros((4, 4, 3))
    guided[1, 1] = [1.0, -1.0, 0.0]
    out = guided_to_rgb(guided)
    assert out[0, 0].tolist() == [128, 128, 128]
    assert out[1, 1].tolist() == [255, 1, 128]
    np.testing.assert_array_equal(guided_to_rgb(np.zeros((3, 3))), 128)


# --- pictures --------------------------------------------------------------------------------

def test_blend_is_halcons_add_image_of_the_coloured_bytes():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    heat = rng.uniform(0, 1, (6, 5))
    picture = render_heatmap(image, heat, "map", "jet", None, min_size=1)
    coloured = halcon_table("jet")[(heat * 255).astype(int)]
    # add_image(Image, Coloured, 0.5, 0), rounded half up
    np.testing.assert_array_equal(picture, np.floor((image.astype(int) + coloured) / 2 + 0.5))
    real = rng.normal(size=(6, 5))  # a grey real image: stretched, repeated to RGB
    picture = render_heatmap(real, np.zeros((6, 5)), "map", "hot", None, min_size=1)
    grey = np.rint((real - real.min()) * 255 / (real.max() - real.min()))
    np.testing.assert_array_equal(picture, np.floor(grey[..., None].repeat(3, 2) / 2 + 0.5))


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


def test_legend_lines_in_halcons_order():
    legend = Legend("confidence_based", 7, 0.875, "scratch", 0.9, "dent", 0.4321, None)
    assert legend.texts() == [
        "Image", "Ground truth class: dent", "Predicted class: scratch", "Confidence: 0.90",
        "Heatmap", "Method: Confidence based", "Target class: 7",
        "Target class confidence: 0.88", "Maximum deviation: 0.43"]
    colours = dict(legend.lines())
    assert colours["Predicted class: scratch"] == RED
    assert all(colour == WHITE for text, colour in legend.lines() if "Predicted" not in text)
    right = Legend("grad_cam", 7, 0.875, "dent", 0.9, "dent")
    assert dict(right.lines())["Predicted class: dent"] == GREEN
    plain = Legend("guided_grad_cam", 3, 0.5, "dent", 0.5)
    assert plain.texts() == ["Image", "Predicted class: dent", "Confidence: 0.50", "Heatmap",
                             "Method: Guided-Grad-CAM", "Target class: 3",
                             "Target class confidence: 0.50"]
    assert dict(plain.lines())["Predicted class: dent"] == WHITE


def test_legend_band_with_text_and_colour_bar():
    image = np.full((64, 64, 3), 90, np.uint8)
    legend = Legend("grad_cam", 7, 0.875, "scratch", 0.875, scheme="jet")
    picture = render_heatmap(image, np.zeros((64, 64)), "map", "jet", legend, min_size=320)
    assert picture.shape[1] == 320 and picture.shape[0] > 320
    band = picture[321:]
    bright = (band.sum(axis=2) > 600).mean()
    assert 0.005 < bright < 0.5  # white text on a black band
    # The colour bar runs from blue (left) to red (right).
    bar_rows = np.where((np.abs(band[:, :, 0].astype(int) - band[:, :, 2]) > 100).any(axis=1))[0]
    row = band[bar_rows[len(bar_rows) // 2]]
    coloured = np.where(np.abs(row[:, 0].astype(int) - row[:, 2]) > 60)[0]
    left, right = row[coloured[0] + 2], row[coloured[-1] - 2]
    assert left[2] > left[0] and right[0] > right[2]


def test_guided_picture_has_no_colour_bar():
    guided = np.random.default_rng(1).normal(size=(32, 32, 3))
    picture = render_heatmap(np.zeros((32, 32, 3), np.uint8), guided, "image", "jet",
                             Legend("guided_grad_cam", 0, None), min_size=320)
    assert picture.shape[0] > 320
    band = picture[320:].astype(int)
    assert (np.abs(band[:, :, 0] - band[:, :, 2]) < 30).all()  # only white text on black


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
                           {"display_legend": "false", "display_bottom_desc": "false"}, windows)
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
    from dlheatmap.display import legend_title, method_title
    from dlheatmap.methods import METHODS

    assert set(METHODS) == set(TITLES)  # a new method needs a title here too
    halcon = {"grad_cam": "Grad-CAM", "guided_grad_cam": "Guided-Grad-CAM",
              "confidence_based": "Confidence based"}
    for name, title in TITLES.items():
        assert method_title(name) == title
        assert Legend(name, 3).texts()[2] == f"Method: {halcon.get(name, title)}"
        assert legend_title(name) == halcon.get(name, title)
    assert Legend("confidence_based", 3).texts()[2] == "Method: Confidence based"
    assert Legend("my_method", 0).texts()[2] == "Method: my method"  # CLI-only methods


def _ink(pixels: np.ndarray) -> np.ndarray:
    """Where white legend text (anti-aliased) lies on the black band."""
    return pixels.astype(int).sum(axis=-1) > 3 * 55


def _ink_width(text: str, size: int) -> int:
    """The ink width of ``text`` drawn alone by Pillow in the legend's font."""
    from PIL import ImageDraw, ImageFont

    canvas = Image.new("RGB", (40 * size, 3 * size), "black")
    ImageDraw.Draw(canvas).text((size, size), text, fill=(255, 255, 255),
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
    legend = Legend("grad_cam_plus_plus", 1, 0.523, "ring", 0.523, scheme="jet")
    picture = render_heatmap(image, heat, "map", "jet", legend)
    plain = render_heatmap(image, heat, "map", "jet", None)
    offset = (picture.shape[1] - width) // 2
    np.testing.assert_array_equal(picture[:512, offset:offset + width], plain)
    assert (picture[:512, :offset] == 0).all() and (picture[:512, offset + width:] == 0).all()

    band = picture[513:]
    coloured = np.where((np.abs(band[..., 0].astype(int) - band[..., 2]) > 100).any(axis=1))[0]
    text, labels = _ink(band[:coloured[0] - 1]), _ink(band[coloured[-1] + 2:])
    columns = np.where(text.any(axis=0))[0]
    longest = max(_ink_width(line, 11) for line in legend.texts())
    assert columns[-1] - columns[0] + 1 == longest  # nothing cut off
    assert columns[-1] < picture.shape[1] - 3  # and a margin after it

    low, high = _ink_width("0 (low)", 11), _ink_width("1 (high)", 11)
    label_columns = np.where(labels.any(axis=0))[0]
    low_end = label_columns[0] + low  # first column after "0 (low)"
    after = label_columns[label_columns >= low_end]
    assert after[0] >= low_end + 5  # a clear gap before "1 (high)"
    assert after[-1] - after[0] + 1 == high and after[-1] < picture.shape[1] - 3


# --- dev_display_dl_data as HALCON's procedure draws it --------------------------------------

def _confidence_result(heat):
    result = _result(np.zeros_like(heat))
    result["heatmap_confidence_based"] = {"heatmap_image_class_1": heat,
                                          "classification_heatmap_maxdeviation": 0.25}
    return result


def test_confidence_based_heatmap_is_shown_as_stored_with_its_maximum_deviation():
    heat = np.zeros((16, 16), np.float32)
    heat[4:8, 8:12] = 1.0
    heat[0, 0] = 0.5
    sample = {"image": np.full((16, 16, 3), 7.0, np.float32), "image_id": 12}
    windows = {}
    ha.dev_display_dl_data(sample, _confidence_result(heat), [], "heatmap_confidence_based",
                           {"display_legend": "false", "display_bottom_desc": "false"}, windows)
    picture = ha.dump_window_image(windows["heatmap_confidence_based"])
    factor = 20  # enlarged to 320
    # the stored image itself, stretched 0..1 -> 0..255 and grey: not blended, not coloured
    expected = np.rint(heat * 255).astype(np.uint8).repeat(factor, 0).repeat(factor, 1)
    np.testing.assert_array_equal(picture, np.repeat(expected[..., None], 3, axis=2))
    ha.dev_display_dl_data(sample, _confidence_result(heat), [], "heatmap_confidence_based",
                           [], windows)
    with_legend = ha.dump_window_image(windows["heatmap_confidence_based"])
    assert with_legend.shape[0] > 320
    band = with_legend[321:].astype(int)
    assert (np.abs(band[..., 0] - band[..., 2]) < 30).all()  # no colour bar


def test_ground_truth_and_predicted_class_colour(monkeypatch):
    import dlheatmap.display as display

    seen = []
    original = display.add_text_band

    def spy(picture, lines, scheme=None):
        seen.append(lines)
        return original(picture, lines, scheme)

    monkeypatch.setattr(display, "add_text_band", spy)
    info = {"class_ids": [1, 3], "class_names": ["ok", "dent"]}
    for label, colour in ((3, GREEN), (1, RED)):
        sample = {"image": np.zeros((8, 8), np.float32), "image_label_id": label,
                  "image_id": 5}
        ha.dev_display_dl_data(sample, _result(np.ones((8, 8))), info, "heatmap_grad_cam", [],
                               {})
        legend, bottom = seen[-2], seen[-1]
        texts = [text for text, _ in legend]
        assert texts[:4] == ["Image", f"Ground truth class: {'dent' if label == 3 else 'ok'}",
                             "Predicted class: dent", "Confidence: 0.75"]
        assert dict(legend)["Predicted class: dent"] == colour
        assert texts[4:] == ["Heatmap", "Method: Grad-CAM", "Target class: 3",
                             "Target class confidence: 0.75"]
        assert bottom == [("Classification heatmap (image ID 5)", WHITE)]


def test_missing_heatmap_image_and_unknown_scheme_are_halcons_messages():
    result = _result(np.zeros((4, 4)))
    result["heatmap_grad_cam"] = {"something_else": 1}
    with pytest.raises(HOperatorError, match="Heatmap image could not be found in DLResult") \
            as info:
        ha.dev_display_dl_data({"image": np.zeros((4, 4))}, result, [], "heatmap_grad_cam",
                               [], {})
    assert info.value.error_code == 2894
    with pytest.raises(HOperatorError, match=r"Unknown color schema: viridis\.") as info:
        ha.dev_display_dl_data({"image": np.zeros((4, 4))}, _result(np.zeros((4, 4))), [],
                               "heatmap_grad_cam", {"heatmap_color_scheme": "viridis"}, {})
    assert info.value.error_code == 1305
