"""Reading and writing image files, and the resize the workflow uses.

Truths: files written by Pillow or tifffile directly (not by dlheatmap) must read back with
exactly the pixel values written; resizes are checked against values worked out by hand and
against plain block means.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

import dlheatmap.halcon as ha
from dlheatmap.errors import HOperatorError
from dlheatmap.imaging import (
    ImagePrecisionWarning,
    find_images,
    load_image,
    resize,
    save_image,
)


@pytest.fixture
def pixels():
    rng = np.random.default_rng(7)
    return {
        "grey8": rng.integers(0, 256, (13, 17), dtype=np.uint8),
        "rgb8": rng.integers(0, 256, (13, 17, 3), dtype=np.uint8),
        "grey16": rng.integers(0, 65536, (13, 17), dtype=np.uint16),
        "rgb16": rng.integers(0, 65536, (13, 17, 3), dtype=np.uint16),
        "rgba8": rng.integers(0, 256, (13, 17, 4), dtype=np.uint8),
    }


# --- reading files written by other libraries ------------------------------------------------

@pytest.mark.parametrize("name,suffix", [
    ("grey8", ".png"), ("rgb8", ".png"), ("grey8", ".bmp"), ("rgb8", ".bmp"),
    ("grey16", ".png"), ("rgba8", ".png"),
])
def test_pillow_written_files_read_back_exactly(tmp_path, pixels, name, suffix):
    data = pixels[name]
    path = tmp_path / f"img{suffix}"
    Image.fromarray(data).save(path)  # Pillow picks L, RGB, RGBA or I;16
    image = ha.read_image(str(path))
    assert image.dtype == data.dtype
    assert image.shape == data.shape
    np.testing.assert_array_equal(image, data)


@pytest.mark.parametrize("name", ["grey8", "rgb8", "grey16", "rgb16"])
def test_tifffile_written_files_read_back_exactly(tmp_path, pixels, name):
    data = pixels[name]
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, data, photometric="rgb" if data.ndim == 3 else "minisblack")
    image = load_image(path)
    assert image.dtype == data.dtype and image.shape == data.shape
    np.testing.assert_array_equal(image, data)


def test_planar_tiff_comes_back_channels_last(tmp_path, pixels):
    data = pixels["rgb16"]
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(data, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(load_image(path), data)


def test_float_tiff_is_float32(tmp_path):
    data = np.linspace(-3.5, 7.25, 12 * 5, dtype=np.float64).reshape(12, 5)
    path = tmp_path / "real.tiff"
    tifffile.imwrite(path, data)
    image = load_image(path)
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, data, rtol=1e-6)


def test_jpeg_reads_close_to_what_was_written(tmp_path):
    # JPEG is lossy: a smooth image must come back within a few grey values.
    ramp = np.tile(np.linspace(0, 255, 64), (48, 1))
    data = np.stack([ramp, ramp[::-1], np.full_like(ramp, 128)], axis=2).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(data).save(path, quality=95)
    image = load_image(path)
    assert image.dtype == np.uint8 and image.shape == data.shape
    assert np.abs(image.astype(int) - data).mean() < 3


def test_palette_png_is_expanded_to_rgb(tmp_path):
    data = np.zeros((4, 6), np.uint8)
    data[1:3, 2:5] = 1
    pil = Image.fromarray(data, mode="P")
    pil.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pil.save(tmp_path / "pal.png")
    image = load_image(tmp_path / "pal.png")
    assert image.shape == (4, 6, 3)
    np.testing.assert_array_equal(image[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(image[1, 2], [200, 100, 50])


def test_sixteen_bit_colour_png_keeps_sixteen_bits_with_opencv(tmp_path, pixels):
    cv2 = pytest.importorskip("cv2")
    data = pixels["rgb16"]
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), data[:, :, ::-1])  # OpenCV writes BGR order
    image = load_image(path)
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, data)


def test_sixteen_bit_colour_png_without_opencv_warns_and_keeps_8_bits(tmp_path, pixels,
                                                                       monkeypatch):
    cv2 = pytest.importorskip("cv2")
    data = pixels["rgb16"]
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), data[:, :, ::-1])
    monkeypatch.setitem(__import__("sys").modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.warns(ImagePrecisionWarning):
        image = load_image(path)
    assert image.dtype == np.uint8
    # Pillow keeps the high byte of each sample.
    np.testing.assert_array_equal(image, (data >> 8).astype(np.uint8))


def test_name_without_suffix_finds_the_file(tmp_path, pixels):
    Image.fromarray(pixels["grey8"]).save(tmp_path / "part.bmp")
    np.testing.assert_array_equal(ha.read_image(str(tmp_path / "part")), pixels["grey8"])


def test_several_names_give_a_list(tmp_path, pixels):
    Image.fromarray(pixels["grey8"]).save(tmp_path / "a.png")
    Image.fromarray(pixels["rgb8"]).save(tmp_path / "b.png")
    images = ha.read_image([str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    assert isinstance(images, list) and len(images) == 2
    assert images[1].shape == (13, 17, 3)


@pytest.mark.parametrize("content,code", [(None, 5200), (b"not an image at all", 5234),
                                          (b"\x89PNG\r\n\x1a\n broken", 5234)])
def test_unreadable_files_raise_halcon_codes(tmp_path, content, code):
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(HOperatorError) as info:
        ha.read_image(str(path))
    assert info.value.error_code == code


def test_read_image_refuses_a_number():
    with pytest.raises(HOperatorError) as info:
        ha.read_image(42)
    assert info.value.error_code == 1201


# --- writing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,fmt", [("grey8", "png"), ("rgb8", "png"), ("grey16", "png"),
                                      ("rgb16", "tiff"), ("rgb8", "bmp"), ("rgba8", "png")])
def test_write_image_appends_suffix_and_other_readers_agree(tmp_path, pixels, name, fmt):
    data = pixels[name]
    ha.write_image(data, fmt, 0, str(tmp_path / "out"))
    path = tmp_path / ("out.tif" if fmt == "tiff" else f"out.{fmt}")
    assert path.is_file()
    if fmt == "tiff":
        back = tifffile.imread(path)
    else:
        with Image.open(path) as pil:
            back = np.asarray(pil)
    np.testing.assert_array_equal(back.astype(data.dtype), data)


def test_write_image_keeps_an_existing_suffix(tmp_path, pixels):
    ha.write_image(pixels["grey8"], "png", 0, str(tmp_path / "same.png"))
    assert [p.name for p in tmp_path.iterdir()] == ["same.png"]


def test_write_refuses_what_the_format_cannot_hold(tmp_path, pixels):
    with pytest.raises(HOperatorError) as info:
        save_image(pixels["grey16"], tmp_path / "x.jpg")
    assert info.value.error_code == 5217
    with pytest.raises(HOperatorError) as info:
        ha.write_image(pixels["grey8"], "gif", 0, str(tmp_path / "x"))
    assert info.value.error_code == 1302


def test_image_size_and_channels(pixels):
    assert ha.get_image_size(pixels["rgb8"]) == ([17], [13])
    assert ha.get_image_size_s(pixels["grey8"]) == (17, 13)
    assert ha.count_channels([pixels["grey8"], pixels["rgba8"]]) == [1, 4]
    assert ha.count_channels_s(pixels["rgb16"]) == 3


def test_find_images_expands_folders_sorted(tmp_path, pixels):
    for name in ("b.png", "a.jpg", "notes.txt", "sub/c.tif"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")
    assert [p.name for p in find_images([tmp_path])] == ["a.jpg", "b.png"]
    assert [p.name for p in find_images([tmp_path], recursive=True)] == ["a.jpg", "b.png",
                                                                         "c.tif"]
    with pytest.raises(FileNotFoundError):
        find_images([tmp_path / "missing"])


# --- resizing --------------------------------------------------------------------------------

def test_shrinking_by_whole_factors_is_the_block_mean():
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 255, (12, 18, 3))
    expected = image.reshape(4, 3, 6, 3, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(resize(image, 6, 4), expected, rtol=1e-12)


def test_shrinking_by_a_fraction_weights_partial_pixels():
    # 5 pixels onto 2: each output covers 2.5 input pixels.
    row = np.array([[0.0, 1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(resize(row, 2, 1), [[(0 + 1 + 0.5 * 2) / 2.5,
                                                     (0.5 * 2 + 3 + 4) / 2.5]])


def test_enlarging_interpolates_between_pixel_centres():
    # 2 pixels onto 4: output centres at input positions -0.25, 0.25, 0.75, 1.25 (clamped).
    row = np.array([[10.0, 20.0]])
    np.testing.assert_allclose(resize(row, 4, 1), [[10.0, 12.5, 17.5, 20.0]])


def test_resize_keeps_constants_and_range():
    rng = np.random.default_rng(5)
    image = rng.uniform(-4, 9, (7, 11))
    for width, height in ((3, 5), (23, 2), (11, 7), (40, 30)):
        out = resize(image, width, height)
        assert out.shape == (height, width)
        assert out.min() >= image.min() - 1e-9 and out.max() <= image.max() + 1e-9
    np.testing.assert_allclose(resize(np.full((5, 9, 2), 3.5), 4, 13), 3.5)


def test_resize_is_separable_and_keeps_the_mean_when_shrinking():
    rng = np.random.default_rng(9)
    image = rng.uniform(0, 1, (30, 20))
    out = resize(image, 7, 9)
    # Area averaging preserves the total "mass" exactly.
    assert out.mean() == pytest.approx(image.mean(), rel=1e-12)
    both = resize(resize(image, 20, 9), 7, 9)
    np.testing.assert_allclose(out, both, rtol=1e-12)
