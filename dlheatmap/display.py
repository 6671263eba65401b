"""Pictures of heatmaps: colour schemes, blending, a legend, PNG files.

The display equivalent of HALCON's ``dev_display_dl_data`` for heatmaps, drawn as HALCON's
procedure draws them: a Grad-CAM map is converted to bytes, coloured with one of HALCON's
lookup tables ('jet' by default, 'inverse_jet', 'hot', 'inverse_hot') and blended 50/50 over
the input image stretched to bytes; a guided heatmap is shown alone, the confidence-based
heatmap as it is stored. A legend below the picture gives HALCON's lines in HALCON's order
(ground truth, predicted class in green or red, confidence, method, target class and its
confidence, maximum deviation), with a colour bar for coloured maps. Instead of a window,
pictures are numpy RGB arrays that can be written as PNG files. Formulas are in
``spec/decisions-workflow.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlheatmap.errors import ErrorCode, HOperatorError, wrong_type, wrong_value
from dlheatmap.imaging import FILE_FORMATS, resize, save_image, with_suffix
from dlheatmap.methods import METHODS
from dlheatmap.methods.base import KINDS
from dlheatmap.results import HeatmapEntry, heatmap_entry, method_kind
from dlheatmap.values import single

COLOR_SCHEMES = ("jet", "inverse_jet", "hot", "inverse_hot")
DEFAULT_SCHEME = "jet"
MIN_PICTURE_SIZE = 320  # smaller images are enlarged so that the legend stays readable
GUIDED_PERCENTILE = 99.5
LOW_LABEL, HIGH_LABEL = "0 (low)", "1 (high)"  # the colour bar's ends


# --- colours ---------------------------------------------------------------------------------

def _jet(centre: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: 383 - 4 * np.abs(x - centre)


# HALCON's lookup tables (dev_display_dl_data's procedure code): each channel a function of
# the byte value x = 0..255, clipped to 0..255.
_LOOKUP_FORMULAS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], ...]] = {
    "jet": (_jet(192), _jet(128), _jet(64)),
    "inverse_jet": (_jet(64), _jet(128), _jet(192)),
    "hot": (lambda x: 3 * x, lambda x: 3 * x - 255, lambda x: 3 * x - 510),
    "inverse_hot": (lambda x: 765 - 3 * x, lambda x: 510 - 3 * x, lambda x: 255 - 3 * x),
}


def lookup_table(scheme: str = DEFAULT_SCHEME) -> np.ndarray:
    """HALCON's 256-entry lookup table of ``scheme``: uint8 [256, 3] (R, G, B).

    Raises
    ------
    ValueError
        "Unknown color schema: <name>." for a scheme HALCON does not have.
    """
    if scheme not in _LOOKUP_FORMULAS:
        raise ValueError(f"Unknown color schema: {scheme}.")
    x = np.arange(256, dtype=np.int64)
    return np.stack([np.clip(f(x), 0, 255) for f in _LOOKUP_FORMULAS[scheme]],
                    axis=1).astype(np.uint8)


def heatmap_bytes(values: np.ndarray) -> np.ndarray:
    """A real heatmap as HALCON converts it for colouring: 0..1 mapped onto 0..255, clipped,
    fractions cut off (uint8)."""
    scaled = np.clip(np.asarray(values, np.float64) * 255.0, 0.0, 255.0)
    return scaled.astype(np.uint8)


def colormap(values: np.ndarray, scheme: str = DEFAULT_SCHEME) -> np.ndarray:
    """RGB colours in [0, 1] of values in [0, 1] (clipped), shape ``values.shape + (3,)``:
    HALCON's lookup table applied to :func:`heatmap_bytes`, divided by 255."""
    return lookup_table(scheme)[heatmap_bytes(values)] / 255.0


def to_display_rgb(image: np.ndarray) -> np.ndarray:
    """An image as HALCON's display procedure shows it, uint8 RGB.

    ``uint8`` is shown as it is, ``uint16`` divided by 257 (65535 -> 255); real images are
    stretched from their own minimum..maximum (over all channels) to 0..255, a constant real
    image is mid-grey. An image without three channels has its first channel repeated three
    times (HALCON's rule, also for two or four channels).
    """
    data = np.asarray(image)
    data = data[:, :, None] if data.ndim == 2 else data
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
    if out.shape[2] != 3:
        out = np.repeat(out[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(out)


def blend(base: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """HALCON's ``add_image(Image, Coloured, 0.5, 0)`` on bytes: ``(g1 + g2) * 0.5`` rounded
    half up (base: uint8 RGB; colours: RGB in [0, 1] from :func:`colormap`)."""
    coloured = np.rint(255.0 * np.asarray(colours)).astype(np.int64)
    return ((base.astype(np.int64) + coloured + 1) // 2).astype(np.uint8)


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

WHITE, GREEN, RED = (255, 255, 255), (0, 200, 0), (230, 40, 40)
LEGEND_BACKGROUND, SEPARATOR = (0, 0, 0), (128, 128, 128)
# HALCON's names of its heatmap methods in the legend; other methods show their title.
HALCON_TITLES = {"grad_cam": "Grad-CAM", "guided_grad_cam": "Guided-Grad-CAM",
                 "confidence_based": "Confidence based"}


@dataclass(frozen=True)
class Legend:
    """What the legend below a heatmap picture says, in HALCON's lines and order.

    ``method`` is a heatmap method name ('grad_cam', ...); confidences are in [0, 1] or None
    when unknown; ``ground_truth`` the name of the sample's 'image_label_id' class, if any;
    ``max_deviation`` the confidence-based heatmap's; ``scheme`` the colour scheme of a
    coloured map (drawn as a colour bar), None for heatmaps shown as they are.
    """

    method: str
    target_class_id: int
    target_confidence: float | None = None
    predicted_class: str | None = None
    predicted_confidence: float | None = None
    ground_truth: str | None = None
    max_deviation: float | None = None
    scheme: str | None = None

    def lines(self) -> list[tuple[str, tuple[int, int, int]]]:
        """(text, RGB colour) per line: the 'Image' block, then the 'Heatmap' block."""
        lines = [("Image", WHITE)]
        predicted_colour = WHITE
        if self.ground_truth is not None:
            lines.append((f"Ground truth class: {self.ground_truth}", WHITE))
            predicted_colour = GREEN if self.predicted_class == self.ground_truth else RED
        if self.predicted_class is not None:
            lines.append((f"Predicted class: {self.predicted_class}", predicted_colour))
        if self.predicted_confidence is not None:
            lines.append((f"Confidence: {self.predicted_confidence:.2f}", WHITE))
        lines += [("Heatmap", WHITE), (f"Method: {legend_title(self.method)}", WHITE),
                  (f"Target class: {self.target_class_id}", WHITE)]
        if self.target_confidence is not None:
            lines.append((f"Target class confidence: {self.target_confidence:.2f}", WHITE))
        if self.max_deviation is not None:
            lines.append((f"Maximum deviation: {self.max_deviation:.2f}", WHITE))
        return lines

    def texts(self) -> list[str]:
        return [text for text, _ in self.lines()]


def legend_for(result: Mapping, entry: HeatmapEntry, names: Mapping[int, str] | None = None,
               ground_truth: str | None = None, scheme: str | None = None) -> Legend:
    """The legend of heatmap ``entry`` of ``result`` (an apply_dl_model result with heatmaps);
    ``names`` replace the result's class names (DLDatasetInfo)."""
    ids = list(result.get("classification_class_ids", []))
    confidences = list(result.get("classification_confidences", []))
    known = dict(zip(ids, result.get("classification_class_names", []), strict=False))
    known.update(names or {})
    has_confidences = bool(ids) and len(confidences) == len(ids)
    return Legend(
        method=entry.method, target_class_id=entry.class_id,
        target_confidence=float(confidences[ids.index(entry.class_id)])
        if has_confidences and entry.class_id in ids else None,
        predicted_class=str(known[ids[0]]) if ids and ids[0] in known else None,
        predicted_confidence=float(confidences[0]) if has_confidences else None,
        ground_truth=ground_truth, max_deviation=entry.max_deviation, scheme=scheme)


def method_title(method: str) -> str:
    """The human name of a heatmap method ('grad_cam_plus_plus' -> 'Grad-CAM++'); a name no
    method class knows (a method added to the CLI only) is shown with spaces."""
    known = METHODS.get(method)
    return getattr(known, "title", None) or method.replace("_", " ")


def legend_title(method: str) -> str:
    """The method's name in a legend: HALCON's for its methods, else :func:`method_title`."""
    return HALCON_TITLES.get(method) or method_title(method)


def _enlarged(height: int, width: int, min_size: int) -> tuple[int, tuple[int, int]]:
    factor = max(1, math.ceil(min_size / max(height, width)))
    return factor, (width * factor, height * factor)


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
        ``kind='map'``: H x W values in [0, 1], coloured with HALCON's lookup table and
        blended 50/50 over ``image``. ``kind='image'``: H x W (x C) signed values (a guided
        heatmap), shown alone. Any size: it is resized onto the image (linear interpolation,
        pixel centres aligned).
    kind : {'map', 'image'}
    scheme : str
        One of :data:`COLOR_SCHEMES` (used for 'map').
    legend : Legend, optional
        Drawn below the picture (with a colour bar where ``legend.scheme`` is set). A picture
        narrower than the legend's text is centred on a wider canvas.
    min_size : int
        Pictures whose longer side is shorter are enlarged by a whole factor first.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be 'map' or 'image', got {kind!r}")
    factor, size = _enlarged(*image.shape[:2], min_size)
    if kind == "map":
        base = to_display_rgb(image)
        if factor > 1:
            base = np.clip(np.rint(resize(base, *size)), 0, 255).astype(np.uint8)
        heat = resize(np.asarray(heatmap, np.float64), *size)
        picture = blend(base, colormap(heat, scheme))
    else:
        picture = guided_to_rgb(resize(np.asarray(heatmap, np.float64), *size))
    return picture if legend is None else add_legend(picture, legend)


def render_stored(heatmap: np.ndarray, legend: Legend | None = None,
                  min_size: int = MIN_PICTURE_SIZE) -> np.ndarray:
    """A heatmap shown as it is stored, as HALCON shows the confidence-based one: the image
    itself (:func:`to_display_rgb`), enlarged by a whole factor like the other pictures."""
    picture = to_display_rgb(heatmap)
    factor, _ = _enlarged(*picture.shape[:2], min_size)
    picture = np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)
    return picture if legend is None else add_legend(picture, legend)


def add_legend(picture: np.ndarray, legend: Legend) -> np.ndarray:
    """``picture`` with a black band below it holding the legend's lines in their colours and,
    for a coloured map, a colour bar."""
    return add_text_band(picture, legend.lines(), legend.scheme)


def add_text_band(picture: np.ndarray, lines: list[tuple[str, tuple[int, int, int]]],
                  scheme: str | None = None) -> np.ndarray:
    """``picture`` with a black band below it holding ``lines`` (text, RGB colour) and, if
    ``scheme`` is given, a colour bar of it.

    The font size follows the picture's width; a picture too narrow for the text (a tall,
    thin image, a long class name) is centred on a canvas as wide as the text, so no line is
    cut and the colour bar's labels keep apart.
    """
    from PIL import Image, ImageDraw

    font_size = max(11, min(24, picture.shape[1] // 22))
    font = _font(font_size)
    line_height = int(font_size * 1.35)
    pad = max(4, font_size // 2)
    gap = font_size if scheme else 0  # between the colour bar's two labels
    width = max(picture.shape[1], _legend_width([text for text, _ in lines], font, pad, gap))
    bar_height = font_size if scheme else 0
    band = pad + len(lines) * line_height + (bar_height + line_height + pad if scheme else 0)
    canvas = Image.new("RGB", (width, picture.shape[0] + band), LEGEND_BACKGROUND)
    canvas.paste(Image.fromarray(picture), ((width - picture.shape[1]) // 2, 0))
    draw = ImageDraw.Draw(canvas)
    draw.line((0, picture.shape[0], width, picture.shape[0]), fill=SEPARATOR)  # dark pictures
    y = picture.shape[0] + pad
    for text, colour in lines:
        draw.text((pad, y), text, fill=colour, font=font)
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
    draw.rectangle((left, top, right - 1, bottom - 1), outline=WHITE)
    label_y = bottom + 2
    draw.text((left, label_y), LOW_LABEL, fill=WHITE, font=font)
    draw.text((right - _text_width(HIGH_LABEL, font), label_y), HIGH_LABEL, fill=WHITE,
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


DISPLAY_GEN_PARAMS = ("heatmap_color_scheme", "display_legend", "display_bottom_desc")
HEATMAP_NOT_FOUND = "Heatmap image could not be found in DLResult."
# Heatmaps HALCON shows as they are stored, neither coloured nor blended over the image.
SHOWN_AS_STORED = frozenset({"confidence_based"})


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
        The sample with its 'image' (as given to the heatmap operator); its 'image_label_id'
        adds the ground truth to the legend, its 'image_id' to the bottom description.
    dlresult : dict
        A result holding heatmaps (gen_dl_model_heatmap, gen_dl_model_classification_heatmap).
    dldataset_info : dict or empty
        Optional 'class_ids' and 'class_names' used for the legend instead of the result's.
    keys_for_display : str or sequence of str
        'image', 'heatmap_grad_cam', 'heatmap_guided_grad_cam', 'heatmap_confidence_based' or
        another 'heatmap_<method>' key of the result.
    gen_param : dict or empty
        'heatmap_color_scheme' ('jet', 'inverse_jet', 'hot', 'inverse_hot'; default 'jet'),
        'display_legend' and 'display_bottom_desc' ('true' default, 'false').
    window_handle_dict : dict
        Filled with the windows, one per key.

    Raises
    ------
    HOperatorError
        1201 / 1202 / 1206 sample, result or window dict not a dict; 2894 a key missing in
        the sample or result, or "Heatmap image could not be found in DLResult."; 1304 an
        unknown display key; 1305 an unknown or invalid GenParam ("Unknown color schema:
        <name>." for a scheme HALCON does not have).
    """
    operator = "dev_display_dl_data"
    sample = _mapping(dlsample, 1, "DLSample", operator)
    result = _mapping(dlresult, 2, "DLResult", operator)
    windows = _mapping(window_handle_dict, 6, "WindowHandleDict", operator)
    keys = [keys_for_display] if isinstance(keys_for_display, str) else list(keys_for_display)
    options = _display_options(gen_param, operator)
    names = _class_names(dldataset_info)
    image = _lookup(sample, "image", operator)
    for key in keys:
        if key == "image":
            picture = to_display_rgb(image)
        elif isinstance(key, str) and key.startswith("heatmap_"):
            picture = _heatmap_picture(sample, result, key, names, options, operator)
        else:
            raise wrong_value(4, f"KeysForDisplay: {key!r} is not 'image' or a 'heatmap_*' "
                              "key", operator)
        window = _window(windows, key)
        window.picture = picture


@dataclass(frozen=True)
class _DisplayOptions:
    scheme: str
    legend: bool
    bottom: bool


def _heatmap_picture(sample: Mapping, result: Mapping, key: str, names: dict[int, str],
                     options: _DisplayOptions, operator: str) -> np.ndarray:
    images = _lookup(result, key, operator)
    if isinstance(images, list) and len(images) == 1:
        images = images[0]
    if not isinstance(images, Mapping):
        raise wrong_value(2, f"DLResult[{key!r}] must be a dict of heatmap images", operator)
    try:
        entry = heatmap_entry({key: images})
    except KeyError:
        raise HOperatorError(ErrorCode.DICT_KEY_MISSING, f"{HEATMAP_NOT_FOUND} ({key!r} holds "
                             f"{sorted(map(str, images))})", operator) from None
    stored = entry.method in SHOWN_AS_STORED
    kind = method_kind(entry.method, entry.image)
    legend = None
    if options.legend:
        legend = legend_for(result, entry, names, _ground_truth(sample, result, names),
                            options.scheme if kind == "map" and not stored else None)
    if stored:
        picture = render_stored(entry.image, legend)
    else:
        picture = render_heatmap(sample["image"], entry.image, kind, options.scheme, legend)
    if options.bottom:
        picture = _with_bottom_description(picture, sample)
    return picture


def _with_bottom_description(picture: np.ndarray, sample: Mapping) -> np.ndarray:
    """HALCON's bottom text, 'Classification heatmap (image ID n)', in a band of its own."""
    image_id = single(sample.get("image_id"))
    text = "Classification heatmap" + ("" if image_id is None else f" (image ID {image_id})")
    return add_text_band(picture, [(text, WHITE)])


def _ground_truth(sample: Mapping, result: Mapping, names: dict[int, str]) -> str | None:
    """The name of the sample's 'image_label_id' class (DLDatasetInfo's names, else the
    result's), None without a label."""
    label = single(sample.get("image_label_id"))
    if label is None:
        return None
    known = dict(zip(result.get("classification_class_ids", []),
                     result.get("classification_class_names", []), strict=False))
    known.update(names)
    return str(known.get(int(label), label))


def _class_names(info: Any) -> dict[int, str]:
    """DLDatasetInfo's class names by ID ('class_ids' and 'class_names'; without IDs the
    names are those of IDs 0, 1, ...)."""
    if isinstance(info, list) and len(info) == 1:
        info = info[0]
    if not isinstance(info, Mapping) or "class_names" not in info:
        return {}
    names = list(info["class_names"])
    ids = list(info.get("class_ids", range(len(names))))
    return {int(k): str(v) for k, v in zip(ids, names, strict=False)}


def _display_options(gen_param: Any, operator: str) -> _DisplayOptions:
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
        raise wrong_value(5, f"Unknown color schema: {scheme}.", operator)
    return _DisplayOptions(scheme, *(_switch(gen_param, name, operator)
                                     for name in ("display_legend", "display_bottom_desc")))


def _switch(gen_param: Mapping, name: str, operator: str) -> bool:
    value = single(gen_param.get(name, "true"))
    if value not in ("true", "false", True, False):
        raise wrong_value(5, f"{name} must be 'true' or 'false', got {value!r}", operator)
    return value in ("true", True)


def _mapping(value: Any, position: int, name: str, operator: str) -> Any:
    value = single(value) if isinstance(value, list) else value
    if not isinstance(value, (dict, Mapping)):
        raise wrong_type(position, f"{name} must be a dict, got {type(value).__name__}",
                         operator)
    return value


def _lookup(mapping: Mapping, key: str, operator: str) -> Any:
    if key not in mapping:
        raise HOperatorError(ErrorCode.DICT_KEY_MISSING, f"no key {key!r} in the dictionary",
                             operator)
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
        raise HOperatorError(ErrorCode.UNKNOWN_HANDLE, "WindowHandle must be a window from "
                             f"dev_display_dl_data, got {type(window).__name__}", operator)
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
