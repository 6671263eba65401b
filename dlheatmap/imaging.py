"""Image files to HALCON-layout numpy arrays and back, plus the resize the workflow uses.

Images are numpy arrays laid out as HALCON images are: height x width for one channel,
height x width x channels otherwise. Files keep their pixel type: 8-bit files give ``uint8``,
16-bit files ``uint16``, floating-point TIFFs ``float32``.

Reading uses Pillow (PNG, JPEG, BMP, 8- and 16-bit grey), tifffile (every TIFF, 16-bit colour
included) and, for 16-bit colour PNG files, which Pillow can only reduce to 8 bits, OpenCV when
it is installed. The HALCON operators ``read_image``, ``write_image``, ``get_image_size`` and
``count_channels`` are defined here with HALCON's signatures. Choices made where HALCON is
silent are in ``spec/decisions-workflow.md``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlheatmap.errors import ErrorCode, HOperatorError, wrong_type, wrong_value

# Suffixes tried, in this order, for a file name given without one (as HALCON's read_image does).
READ_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
IMAGE_SUFFIXES = frozenset({*READ_SUFFIXES, ".jpe", ".jfif", ".dib"})
_TIFF_SUFFIXES = (".tif", ".tiff")
# HALCON's format names and the suffixes that name each format (the first one is appended).
FILE_FORMATS = {"png": (".png",), "tiff": (".tif", ".tiff"), "tif": (".tif", ".tiff"),
                "bmp": (".bmp",), "jpeg": (".jpg", ".jpeg"), "jpg": (".jpg", ".jpeg")}


class ImagePrecisionWarning(UserWarning):
    """A file was read with fewer bits per pixel than it stores."""


# --- reading --------------------------------------------------------------------------------

def load_image(path: str | os.PathLike, operator: str = "read_image") -> np.ndarray:
    """Read one image file into a HALCON-layout array of its own pixel type.

    Parameters
    ----------
    path : str or path-like
        PNG, JPEG, TIFF or BMP file. Without a suffix, ``.png``, ``.tif``, ``.tiff``, ``.jpg``,
        ``.jpeg`` and ``.bmp`` are tried in turn.
    operator : str
        Operator name for error messages.

    Returns
    -------
    numpy.ndarray
        ``uint8`` or ``uint16`` (``float32`` for floating-point TIFFs), height x width for a
        grey file, height x width x channels otherwise. An alpha channel is kept as the last
        channel (grey + alpha: 2 channels, colour + alpha: 4), as HALCON's read_image does.

    Raises
    ------
    HOperatorError
        5200 if the file does not exist; 5234 if it is not an image file that can be decoded;
        5217 if its pixel type is not one dlheatmap handles.
    """
    file = _existing_file(Path(path), operator)
    try:
        if file.suffix.lower() in _TIFF_SUFFIXES or _is_tiff(file):
            image = _read_tiff(file)
        else:
            image = _read_with_pillow(file)
    except HOperatorError:
        raise
    except Exception as exc:  # every decoder has its own exception types
        raise HOperatorError(ErrorCode.NOT_AN_IMAGE_FILE, f"{file}: cannot decode the file "
                             f"({type(exc).__name__}: {exc})", operator) from exc
    return _checked_pixels(image, file, operator)


def _existing_file(path: Path, operator: str) -> Path:
    if path.is_file():
        return path
    if not path.suffix:
        for suffix in READ_SUFFIXES:
            candidate = path.with_name(path.name + suffix)
            if candidate.is_file():
                return candidate
    raise HOperatorError(ErrorCode.FILE_NOT_FOUND, f"no image file {os.fspath(path)!r}", operator)


def _is_tiff(file: Path) -> bool:
    with open(file, "rb") as stream:
        head = stream.read(4)
    return head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _read_tiff(file: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(file) as tif:
        series = tif.series[0]
        image = series.asarray()
        axes = series.axes
    # Bring the sample axis last and drop any leading page/plane axes (first page only).
    if "S" in axes and axes.index("S") < axes.index("Y"):
        image = np.moveaxis(image, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    while image.ndim > (3 if axes.endswith("S") else 2):
        image = image[0]
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image


def _read_with_pillow(file: Path) -> np.ndarray:
    from PIL import Image

    if _png_16bit_colour(file):
        image = _read_png16_colour(file)
        if image is not None:
            return image
        warnings.warn(
            f"{file}: 16-bit colour PNG read with 8 bits per channel (Pillow cannot hold "
            "16-bit colour; install opencv-python-headless or save the image as a 16-bit TIFF "
            "for full precision)", ImagePrecisionWarning, stacklevel=3)
    with Image.open(file) as pil:
        pil.load()
        return _pillow_to_array(pil)


def _pillow_to_array(pil) -> np.ndarray:
    mode = pil.mode
    if mode in ("1", "L", "LA", "RGB", "RGBA"):
        image = np.asarray(pil.convert("L") if mode == "1" else pil)
        return image.astype(np.uint8, copy=False)
    if mode.startswith("I;16"):
        return np.asarray(pil).astype(np.uint16)
    if mode == "I":  # Pillow widens 16-bit grey files to 32-bit integers in this mode
        image = np.asarray(pil)
        if image.min() >= 0 and image.max() <= 65535:
            return image.astype(np.uint16)
        return image
    if mode == "F":
        return np.asarray(pil, np.float32)
    if mode == "P":
        transparent = "transparency" in pil.info
        return np.asarray(pil.convert("RGBA" if transparent else "RGB"))
    if mode == "PA":
        return np.asarray(pil.convert("RGBA"))
    return np.asarray(pil.convert("RGB"))  # CMYK, YCbCr, LAB, HSV


def _png_16bit_colour(file: Path) -> bool:
    """True for a PNG file whose header says 16 bits per sample and colour (or grey + alpha)."""
    with open(file, "rb") as stream:
        head = stream.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return False
    bit_depth, colour_type = head[24], head[25]
    return bit_depth == 16 and colour_type in (2, 4, 6)


def _read_png16_colour(file: Path) -> np.ndarray | None:
    """16-bit colour PNG with OpenCV if it is installed (BGR order turned into RGB)."""
    try:
        import cv2
    except ImportError:
        return None
    image = cv2.imread(os.fspath(file), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.ndim == 3 and image.shape[2] >= 3:
        order = [2, 1, 0, 3][: image.shape[2]]
        image = image[:, :, order]
    return np.ascontiguousarray(image)


def _checked_pixels(image: np.ndarray, file: Path, operator: str) -> np.ndarray:
    if image.dtype in (np.float64, np.float16):
        image = image.astype(np.float32)
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise HOperatorError(ErrorCode.WRONG_PIXEL_TYPE, f"{file}: pixel type {image.dtype} is not "
                             "supported (8- or 16-bit unsigned, or float)", operator)
    if image.ndim not in (2, 3) or image.size == 0:
        raise HOperatorError(ErrorCode.NOT_AN_IMAGE_FILE, f"{file}: image of shape {image.shape}",
                             operator)
    return np.ascontiguousarray(image)


def read_image(file_name: str | os.PathLike | Sequence[str | os.PathLike]):
    """Read an image file (HALCON's read_image).

    Parameters
    ----------
    file_name : str, path-like, or sequence of them
        Image file(s); see :func:`load_image` for formats and suffix handling.

    Returns
    -------
    numpy.ndarray or list of numpy.ndarray
        One image for one file name, a list (HALCON's image tuple) for several.

    Raises
    ------
    HOperatorError
        1201 if ``file_name`` is not a path; 5200 missing file; 5234 not a decodable image;
        5217 unsupported pixel type.
    """
    operator = "read_image"
    if isinstance(file_name, (list, tuple)):
        if len(file_name) == 1:
            return read_image(file_name[0])
        return [read_image(name) for name in file_name]
    if not isinstance(file_name, (str, os.PathLike)):
        raise wrong_type(1, f"FileName must be a path, got {type(file_name).__name__}", operator)
    return load_image(file_name, operator)


def find_images(paths: Iterable[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Image files named by ``paths``: files as given, folders expanded (sorted by name).

    Files are taken whatever their suffix; in folders only files with an image suffix
    (PNG, JPEG, TIFF, BMP) are taken. Missing paths raise ``FileNotFoundError``.
    """
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(sorted(p for p in path.glob(pattern)
                                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(os.fspath(path))
    return found


# --- writing --------------------------------------------------------------------------------

def save_image(image: np.ndarray, path: str | os.PathLike, operator: str = "write_image") -> Path:
    """Write a HALCON-layout array to an image file chosen by the path's suffix.

    PNG takes ``uint8`` grey, grey + alpha, RGB and RGBA, and ``uint16`` grey (16-bit colour
    PNG needs OpenCV); TIFF takes ``uint8``, ``uint16`` and float images of any channel count;
    JPEG and BMP take ``uint8`` grey and RGB.

    Raises
    ------
    HOperatorError
        5235 unknown suffix; 5217 a pixel type or channel count the format cannot hold;
        5212 the file cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    try:
        if suffix in _TIFF_SUFFIXES:
            import tifffile

            tifffile.imwrite(path, image, photometric=_photometric(image))
        elif suffix in (".png", ".jpg", ".jpeg", ".bmp"):
            _write_with_pillow(image, path, suffix, operator)
        else:
            raise HOperatorError(ErrorCode.WRONG_GRAPHIC_FORMAT,
                                 f"unknown image file suffix {suffix!r} "
                                 f"({path})", operator)
    except HOperatorError:
        raise
    except OSError as exc:
        raise HOperatorError(ErrorCode.WRITE_FAILED, f"{path}: {exc}", operator) from exc
    return path


def _photometric(image: np.ndarray) -> str:
    return "rgb" if image.ndim == 3 and image.shape[2] in (3, 4) else "minisblack"


def _write_with_pillow(image: np.ndarray, path: Path, suffix: str, operator: str) -> None:
    from PIL import Image

    channels = 1 if image.ndim == 2 else image.shape[2]
    if image.dtype == np.uint16 and suffix == ".png":
        if channels == 1:
            Image.fromarray(image).save(path)  # uint16 grey: mode I;16
            return
        if _write_png16_colour(image, path):
            return
    allowed = (1, 2, 3, 4) if suffix == ".png" else (1, 3)
    if image.dtype != np.uint8 or channels not in allowed:
        raise HOperatorError(
            ErrorCode.WRONG_PIXEL_TYPE,
f"{suffix} cannot hold a {image.dtype} image with {channels} "
            "channel(s); use TIFF", operator)
    Image.fromarray(np.ascontiguousarray(image)).save(path)  # L, LA, RGB or RGBA


def _write_png16_colour(image: np.ndarray, path: Path) -> bool:
    try:
        import cv2
    except ImportError:
        return False
    order = [2, 1, 0, 3][: image.shape[2]]
    return bool(cv2.imwrite(os.fspath(path), np.ascontiguousarray(image[:, :, order])))


def write_image(image: np.ndarray, format: str, fill_color: Any, file_name: str | os.PathLike
                ) -> None:
    """Write an image file (HALCON's write_image).

    Parameters
    ----------
    image : numpy.ndarray
        HALCON-layout image.
    format : str
        'png', 'tiff', 'bmp' or 'jpeg' (HALCON's options after the format name, such as
        'jpeg 90', are accepted; only the name is used).
    fill_color : int or float
        HALCON fills pixels outside the image domain with it; numpy images have no domain,
        so it is ignored.
    file_name : str or path-like
        The format's suffix is appended unless the name already ends in it.

    Raises
    ------
    HOperatorError
        1201 image not an array; 1302 unknown format; else as :func:`save_image`.
    """
    operator = "write_image"
    if not isinstance(image, np.ndarray):
        raise wrong_type(1, f"Image must be a numpy array, got {type(image).__name__}", operator)
    if isinstance(format, (list, tuple)) and len(format) == 1:
        format = format[0]
    name = format.split()[0].lower() if isinstance(format, str) and format.strip() else ""
    if name not in FILE_FORMATS:
        raise wrong_value(2, f"Format {format!r} is not one of {sorted(FILE_FORMATS)}",
                          operator)
    if isinstance(file_name, (list, tuple)) and len(file_name) == 1:
        file_name = file_name[0]
    save_image(image, with_suffix(file_name, name), operator)


def with_suffix(file_name: str | os.PathLike, format_name: str) -> Path:
    """``file_name`` with the format's suffix appended unless it already ends in one."""
    path = Path(file_name)
    suffixes = FILE_FORMATS[format_name]
    if path.suffix.lower() in suffixes:
        return path
    return path.with_name(path.name + suffixes[0])


# --- image facts ------------------------------------------------------------------------------

def _as_images(image: Any, operator: str) -> list[np.ndarray]:
    images = list(image) if isinstance(image, (list, tuple)) else [image]
    for item in images:
        if not isinstance(item, np.ndarray) or item.ndim not in (2, 3):
            raise wrong_type(1, f"expected an image array (H x W or H x W x C), got "
                             f"{type(item).__name__}", operator)
    return images


def get_image_size(image: Any) -> tuple[list[int], list[int]]:
    """Widths and heights of one image or a list of images (HALCON's get_image_size)."""
    images = _as_images(image, "get_image_size")
    return [int(i.shape[1]) for i in images], [int(i.shape[0]) for i in images]


def get_image_size_s(image: Any) -> tuple[int, int]:
    """(width, height) of a single image."""
    (width,), (height,) = get_image_size(image)
    return width, height


def count_channels(image: Any) -> list[int]:
    """Channel counts of one image or a list of images (HALCON's count_channels)."""
    return [1 if i.ndim == 2 else int(i.shape[2]) for i in _as_images(image, "count_channels")]


def count_channels_s(image: Any) -> int:
    """Channel count of a single image."""
    (channels,) = count_channels(image)
    return channels


# --- resizing ---------------------------------------------------------------------------------

def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an H x W (x C) image to ``height`` x ``width`` as float64, axis by axis.

    Along an axis that shrinks, each output pixel is the exact area average of the input
    pixels it covers (fractional overlaps weighted). Along an axis that grows (or keeps its
    size), values are interpolated linearly between pixel centres (half-pixel alignment,
    edges clamped). Both keep values within the input's range, and a constant image stays
    constant.
    """
    data = np.asarray(image, np.float64)
    data = _resize_axis(data, height, axis=0)
    return _resize_axis(data, width, axis=1)


def _resize_axis(data: np.ndarray, size: int, axis: int) -> np.ndarray:
    length = data.shape[axis]
    if size == length:
        return data
    if size < length:
        return _area_axis(data, size, axis)
    return _linear_axis(data, size, axis)


def _linear_axis(data: np.ndarray, size: int, axis: int) -> np.ndarray:
    length = data.shape[axis]
    centres = (np.arange(size) + 0.5) * (length / size) - 0.5
    centres = np.clip(centres, 0.0, length - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, length - 1)
    frac = centres - low
    shape = [1] * data.ndim
    shape[axis] = size
    frac = frac.reshape(shape)
    return np.take(data, low, axis) * (1 - frac) + np.take(data, high, axis) * frac


def _area_axis(data: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Box filter: integrate the piecewise-constant signal over each output pixel's interval."""
    length = data.shape[axis]
    zero = np.zeros_like(np.take(data, [0], axis))
    cumulative = np.concatenate([zero, np.cumsum(data, axis=axis)], axis=axis)
    edges = np.arange(size + 1) * (length / size)
    whole = np.minimum(np.floor(edges).astype(int), length - 1)
    frac = edges - whole  # in [0, 1]; exact 1.0 only at the right border
    shape = [1] * data.ndim
    shape[axis] = size + 1
    integral = (np.take(cumulative, whole, axis)
                + np.take(data, whole, axis) * frac.reshape(shape))
    lower = np.take(integral, np.arange(size), axis)
    upper = np.take(integral, np.arange(1, size + 1), axis)
    return (upper - lower) / (length / size)
