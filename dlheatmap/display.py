"""Pictures of heatmaps: colour schemes, blending, a legend, PNG files.

The display equivalent of HALCON's ``dev_display_dl_data`` for heatmaps: a Grad-CAM map is
coloured with one of HALCON's schemes ('jet' by default, 'inverse_jet', 'hot', 'inverse_hot')
and blended 50/50 over the sample image; a guided (image-shaped) heatmap is shown alone. A
legend below the picture names the method, the class (name and ID) and its confidence, with a
colour bar for coloured maps. Instead of a window, pictures are numpy RGB arrays that can be
written as PNG files. Formulas are in ``spec/decisions-workflow.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlheatmap.errors import ErrorCode, HOperatorError, wrong_type, wrong_value
from dlheatmap.imaging import FILE_FORMATS, resize, save_image, with_suffix
from dlheatmap.methods import METHODS
from dlheatmap.methods.base import KINDS
from dlheatmap.results import heatmap_entry, method_kind
from dlheatmap.values import single

COLOR_SCHEMES = ("jet", "inverse_jet", "hot", "inverse_hot")
DEFAULT_SCHEME = "jet"
MIN_PICTURE_SIZE = 320  # smaller images are enlarged so that the legend stays readable
GUIDED_PERCENTILE = 99.5
LOW_LABEL, HIGH_LABEL = "0 (low)", "1 (high)"  # the colour bar's ends


# --- colours ---------------------------------------------------------------------------------

def colormap(values: np.ndarray, scheme: str = DEFAULT_SCHEME) -> np.ndarray:
    """RGB colours in [0, 1] for values in [0, 1] (clipped), shape ``values.shape + (3,)``.

    'jet' runs dark blue -> blue -> cyan -> yellow -> red -> dark red, with each channel a
    trapezoid: ``clip(1.5 - |4 v - k|, 0, 1)`` for k = 3 (red), 2 (green), 1 (blue). 'hot'
    runs black -> red -> yellow -> white as MATLAB's hot does: red ``clip(v / 0.375)``, green
    ``clip((v - 0.375) / 0.375)``, blue ``clip((v - 0.75) / 0.25)``. The 'inverse_' schemes
    use ``1 - v``.
    """
    if scheme not in COLOR_SCHEMES:
        raise ValueError(f"colour scheme {scheme!r} is not one of {COLOR_SCHEMES}")
    v = np.clip(np.asarray(values, np.float64), 0.0, 1.0)
    if scheme.startswith("inverse_"):
        v = 1.0 - v
    if scheme.endswith("jet"):
        channels = [1.5 - np.abs(4.0 * v - k) for k in (3.0, 2.0, 1.0)]
    else:
        channels = [v / 0.375, (v - 0.375) / 0.375, (v - 0.75) / 0.25]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)


def to_display_rgb(image: np.ndarray) -> np.ndarray:
    """An image as uint8 RGB for display.

    ``uint8`` is shown as it is, ``uint16`` divided by 257 (65535 -> 255); real images are
    stretched from their own minimum..maximum (over all channels) to 0..255, a constant real
    image is mid-grey. Grey images are repeated into three channels; an alpha channel is
    dropped.
    """
    data = np.asarray(image)
    data = data[:, :, None] if data.ndim == 2 else data
    if data.shape[2] in (2, 4):
        data = data[:, :, :-1]
    if data.dtype == np.uint8:
        out = data
    elif data.dtype == np.uint16:
        out = np.rint(data / 257.0).astype(np.uint8)
    else:
        real = data.astype(np.float64)
        low, high = float(real.min()), float(real.max())
        if high > low:
            out = np.rint((real - low) * (255.0 / (high - low))).astype(np.uint8)
        else:
            out = np.full(real.shape, 128, np.uint8)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out[:, :, :3])


def blend(base: np.ndarray, colours: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """``round((1 - weight) * base + weight * 255 * colours)`` as uint8 (base: uint8 RGB)."""
    mixed = (1.0 - weight) * base.astype(np.float64) + weight * 255.0 * colours
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def guided_to_rgb(guided: np.ndarray) -> np.ndarray:
    """A guided (signed, image-shaped) heatmap as uint8 RGB: 0 is mid-grey.

    Values are divided by the 99.5th percentile of their magnitude (the maximum if that is
    0), clipped to -1..1 and mapped linearly onto 1..255 (0 -> 128), each channel separately
    coloured as it is; a one-channel map is shown in grey.
    """
    data = np.asarray(guided, np.float64)
    data = data[:, :, None] if data.ndim == 2 else data
    magnitude = np.abs(data)
    scale = float(np.percentile(magnitude, GUIDED_PERCENTILE))
    if scale <= 0.0:
        scale = float(magnitude.max())
    unit = np.clip(data / scale, -1.0, 1.0) if scale > 0.0 else np.zeros_like(data)
    out = np.rint(128.0 + 127.0 * unit).astype(np.uint8)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out[:, :, :3])


# --- pictures --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Legend:
    """What the legend below a heatmap picture says.

    ``method`` is a heatmap method name ('grad_cam', ...), shown by its class's ``title``
    ('Grad-CAM'); ``confidence`` a probability in [0, 1] or None when unknown.
    """

    method: str
    class_name: str
    class_id: int
    confidence: float | None
    scheme: str | None = None

    def lines(self) -> list[str]:
        lines = [method_title(self.method) + (f" ({self.scheme})" if self.scheme else "")]
        lines.append(f"Class: {self.class_name} (ID {self.class_id})")
        if self.confidence is not None:
            lines.append(f"Confidence: {100.0 * self.confidence:.2f} %")
        return lines


def method_title(method: str) -> str:
    """The human name of a heatmap method ('grad_cam_plus_plus' -> 'Grad-CAM++'); a name no
    method class knows (a method added to the CLI only) is shown with spaces."""
    known = METHODS.get(method)
    return getattr(known, "title", None) or method.replace("_", " ")


def render_heatmap(
    image: np.ndarray,
    heatmap: np.ndarray,
    kind: str = "map",
    scheme: str = DEFAULT_SCHEME,
    legend: Legend | None = None,
    min_size: int = MIN_PICTURE_SIZE,
) -> np.ndarray:
    """A heatmap picture as uint8 RGB (height x width x 3).

    Parameters
    ----------
    image : numpy.ndarray
        The image the heatmap belongs to (any size and pixel type; see
        :func:`to_display_rgb`).
    heatmap : numpy.ndarray
        ``kind='map'``: H x W values in [0, 1], coloured and blended 50/50 over ``image``.
        ``kind='image'``: H x W (x C) signed values (a guided heatmap), shown alone.
        Any size: it is resized onto the image (linear interpolation, pixel centres aligned).
    kind : {'map', 'image'}
    scheme : str
        One of :data:`COLOR_SCHEMES` (used for 'map').
    legend : Legend, optional
        Drawn below the picture; for 'map' with a colour bar from 0 to 1. A picture narrower
        than the legend's text is centred on a wider white canvas.
    min_size : int
        Pictures whose longer side is shorter are enlarged by a whole factor first.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be 'map' or 'image', got {kind!r}")
    height, width = image.shape[:2]
    factor = max(1, math.ceil(min_size / max(height, width)))
    size = (width * factor, height * factor)
    if kind == "map":
        base = to_display_rgb(image)
        if factor > 1:
            base = np.clip(np.rint(resize(base, *size)), 0, 255).astype(np.uint8)
        heat = resize(np.asarray(heatmap, np.float64), *size)
        picture = blend(base, colormap(heat, scheme))
    else:
        picture = guided_to_rgb(resize(np.asarray(heatmap, np.float64), *size))
    if legend is not None:
        picture = add_legend(picture, legend, scheme if kind == "map" else None)
    return picture


def add_legend(picture: np.ndarray, legend: Legend, scheme: str | None) -> np.ndarray:
    """``picture`` with a white band below it holding the legend text (and a colour bar).

    The font size follows the picture's width; a picture too narrow for the text (a tall,
    thin image, a long class name) is centred on a white canvas as wide as the text, so no
    line is cut and the colour bar's labels keep apart.
    """
    from PIL import Image, ImageDraw

    font_size = max(11, min(24, picture.shape[1] // 22))
    font = _font(font_size)
    lines = legend.lines()
    line_height = int(font_size * 1.35)
    pad = max(4, font_size // 2)
    gap = font_size if scheme else 0  # between the colour bar's two labels
    width = max(picture.shape[1], _legend_width(lines, font, pad, gap))
    bar_height = font_size if scheme else 0
    band = pad + len(lines) * line_height + (bar_height + line_height + pad if scheme else 0)
    canvas = Image.new("RGB", (width, picture.shape[0] + band), "white")
    canvas.paste(Image.fromarray(picture), ((width - picture.shape[1]) // 2, 0))
    draw = ImageDraw.Draw(canvas)
    y = picture.shape[0] + pad
    for line in lines:
        draw.text((pad, y), line, fill=(0, 0, 0), font=font)
        y += line_height
    if scheme:
        _colour_bar(canvas, draw, font, scheme, (pad, y, width - pad, y + bar_height))
    return np.asarray(canvas)


def _text_width(text: str, font) -> int:
    """Pixels from the pen position to the text's right end (advance or ink, the larger)."""
    return math.ceil(max(font.getlength(text), font.getbbox(text)[2]))


def _legend_width(lines: list[str], font, pad: int, gap: int) -> int:
    """The width the longest legend line needs and, with a colour bar (gap > 0), its two
    labels ``gap`` pixels apart."""
    needed = max(_text_width(line, font) for line in lines)
    if gap:
        labels = _text_width(LOW_LABEL, font) + _text_width(HIGH_LABEL, font)
        needed = max(needed, labels + gap)
    return needed + 2 * pad


def _colour_bar(canvas, draw, font, scheme: str, box: tuple[int, int, int, int]) -> None:
    from PIL import Image

    left, top, right, bottom = box
    ramp = colormap(np.linspace(0.0, 1.0, max(2, right - left)), scheme)
    strip = np.repeat((255.0 * ramp[None]).round().astype(np.uint8), bottom - top, axis=0)
    canvas.paste(Image.fromarray(strip), (left, top))
    draw.rectangle((left, top, right - 1, bottom - 1), outline=(0, 0, 0))
    label_y = bottom + 2
    draw.text((left, label_y), LOW_LABEL, fill=(0, 0, 0), font=font)
    draw.text((right - _text_width(HIGH_LABEL, font), label_y), HIGH_LABEL, fill=(0, 0, 0),
              font=font)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def write_png(picture: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 RGB picture as a PNG file (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_image(np.asarray(picture, np.uint8), path, "write_png")


# --- HALCON's dev_display_dl_data and its windows --------------------------------------------

@dataclass
class DisplayWindow:
    """What dlheatmap draws into instead of an HDevelop window: the last picture shown."""

    key: str
    picture: np.ndarray | None = None


DISPLAY_GEN_PARAMS = ("heatmap_color_scheme", "display_legend")


def dev_display_dl_data(
    dlsample: Mapping,
    dlresult: Mapping,
    dldataset_info: Any,
    keys_for_display: Any,
    gen_param: Any,
    window_handle_dict: dict,
) -> None:
    """Draw a sample's image or heatmaps into windows (HALCON's dev_display_dl_data).

    For each key a :class:`DisplayWindow` is kept in ``window_handle_dict`` under that key (as
    a one-element list, like HALCON's tuple of window handles) holding the picture drawn; get
    it with :func:`dump_window_image` or write it with :func:`dump_window`.

    Parameters
    ----------
    dlsample : dict
        The sample with its 'image' (as given to gen_dl_model_heatmap).
    dlresult : dict
        A gen_dl_model_heatmap result.
    dldataset_info : dict or empty
        Optional 'class_ids' and 'class_names' used for the legend instead of the result's.
    keys_for_display : str or sequence of str
        'image', 'heatmap_grad_cam', 'heatmap_guided_grad_cam' or another 'heatmap_<method>'
        key of the result.
    gen_param : dict or empty
        'heatmap_color_scheme' ('jet', 'inverse_jet', 'hot', 'inverse_hot'; default 'jet'),
        'display_legend' ('true' default, 'false').
    window_handle_dict : dict
        Filled with the windows, one per key.

    Raises
    ------
    HOperatorError
        1201 / 1202 / 1206 sample, result or window dict not a dict; 2894 a key missing in
        the sample or result; 1304 an unknown display key; 1305 an unknown or invalid
        GenParam.
    """
    operator = "dev_display_dl_data"
    sample = _mapping(dlsample, 1, "DLSample", operator)
    result = _mapping(dlresult, 2, "DLResult", operator)
    windows = _mapping(window_handle_dict, 6, "WindowHandleDict", operator)
    keys = [keys_for_display] if isinstance(keys_for_display, str) else list(keys_for_display)
    scheme, show_legend = _display_options(gen_param, operator)
    names = _class_names(dldataset_info, result)
    image = _lookup(sample, "image", operator)
    for key in keys:
        if key == "image":
            picture = to_display_rgb(image)
        elif isinstance(key, str) and key.startswith("heatmap_"):
            picture = _heatmap_picture(image, result, key, names, scheme, show_legend, operator)
        else:
            raise wrong_value(4, f"KeysForDisplay: {key!r} is not 'image' or a 'heatmap_*' "
                              "key", operator)
        window = _window(windows, key)
        window.picture = picture


def _heatmap_picture(image, result, key, names, scheme, show_legend, operator) -> np.ndarray:
    images = _lookup(result, key, operator)
    if isinstance(images, list) and len(images) == 1:
        images = images[0]
    if not isinstance(images, Mapping) or not images:
        raise wrong_value(2, f"DLResult[{key!r}] must be a dict of heatmap images", operator)
    try:
        entry = heatmap_entry({key: images})
    except KeyError:
        raise wrong_value(2, f"DLResult[{key!r}] holds no heatmap image", operator) from None
    class_id, heatmap, method = entry.class_id, entry.image, entry.method
    kind = method_kind(method, heatmap)
    legend = None
    if show_legend:
        legend = Legend(method, names.get(class_id, str(class_id)), class_id,
                        _confidence(result, class_id), scheme if kind == "map" else None)
    return render_heatmap(image, heatmap, kind, scheme, legend)


def _confidence(result: Mapping, class_id: int) -> float | None:
    ids = list(result.get("classification_class_ids", []))
    confidences = list(result.get("classification_confidences", []))
    if class_id in ids and len(confidences) == len(ids):
        return float(confidences[ids.index(class_id)])
    return None


def _class_names(info: Any, result: Mapping) -> dict[int, str]:
    names = dict(zip(result.get("classification_class_ids", []),
                     result.get("classification_class_names", []), strict=False))
    if isinstance(info, list) and len(info) == 1:
        info = info[0]
    if isinstance(info, Mapping) and "class_ids" in info and "class_names" in info:
        names.update(zip(list(info["class_ids"]), list(info["class_names"]), strict=False))
    return {int(k): str(v) for k, v in names.items()}


def _display_options(gen_param: Any, operator: str) -> tuple[str, bool]:
    if isinstance(gen_param, list) and len(gen_param) == 1:
        gen_param = gen_param[0]
    if gen_param is None or (isinstance(gen_param, (list, tuple)) and not gen_param):
        gen_param = {}
    if not isinstance(gen_param, Mapping):
        raise wrong_type(5, f"GenParam must be a dict, got {type(gen_param).__name__}", operator)
    unknown = sorted(set(gen_param) - set(DISPLAY_GEN_PARAMS))
    if unknown:
        raise wrong_value(5, f"unknown GenParam keys {unknown}; known: "
                          f"{list(DISPLAY_GEN_PARAMS)}", operator)
    scheme = single(gen_param.get("heatmap_color_scheme", DEFAULT_SCHEME))
    if scheme not in COLOR_SCHEMES:
        raise wrong_value(5, f"heatmap_color_scheme {scheme!r} is not one of "
                          f"{list(COLOR_SCHEMES)}", operator)
    legend = single(gen_param.get("display_legend", "true"))
    if legend not in ("true", "false", True, False):
        raise wrong_value(5, f"display_legend must be 'true' or 'false', got {legend!r}",
                          operator)
    return scheme, legend in ("true", True)


def _mapping(value: Any, position: int, name: str, operator: str) -> Any:
    value = single(value) if isinstance(value, list) else value
    if not isinstance(value, (dict, Mapping)):
        raise wrong_type(position, f"{name} must be a dict, got {type(value).__name__}",
                         operator)
    return value


def _lookup(mapping: Mapping, key: str, operator: str) -> Any:
    if key not in mapping:
        raise HOperatorError(ErrorCode.DICT_KEY_MISSING,
                             f"no key {key!r} in the dictionary", operator)
    return mapping[key]


def _window(windows: dict, key: str) -> DisplayWindow:
    existing = single(windows.get(key))
    if isinstance(existing, DisplayWindow):
        return existing
    window = DisplayWindow(key)
    windows[key] = [window]
    return window


def _window_handle(window_handle: Any, operator: str) -> DisplayWindow:
    window = single(window_handle)
    if not isinstance(window, DisplayWindow):
        raise HOperatorError(ErrorCode.UNKNOWN_HANDLE,
                             f"WindowHandle must be a window from dev_display_dl_data, "
                             f"got {type(window).__name__}", operator)
    if window.picture is None:
        raise wrong_value(1, "the window shows nothing yet", operator)
    return window


def dump_window_image(window_handle: Any) -> np.ndarray:
    """The picture a window shows, as a uint8 RGB image (HALCON's dump_window_image)."""
    return _window_handle(window_handle, "dump_window_image").picture.copy()


def dump_window(window_handle: Any, device: str, file_name: str | os.PathLike) -> None:
    """Write a window's picture to a file (HALCON's dump_window).

    Parameters
    ----------
    window_handle : DisplayWindow
    device : str
        'png', 'tiff', 'bmp' or 'jpeg' (options after the name, e.g. 'jpeg 90', are ignored).
    file_name : str or path-like
        The device's suffix is appended unless the name already ends in it.

    Raises
    ------
    HOperatorError
        2450 not a window; 1302 unknown device; 5212 the file cannot be written.
    """
    operator = "dump_window"
    window = _window_handle(window_handle, operator)
    device = single(device)
    name = device.split()[0].lower() if isinstance(device, str) and device.strip() else ""
    if name not in FILE_FORMATS:
        raise wrong_value(2, f"Device {device!r} is not one of {sorted(FILE_FORMATS)}", operator)
    path = with_suffix(single(file_name), name)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(window.picture, path, operator)
