"""The heatmap entries of a result dict: built and read in this one place.

gen_dl_model_heatmap adds ``'heatmap_<method>' -> {'<prefix><ClassID>': image}`` to a sample's
apply_dl_model result (HALCON's keys, from spec/operators.toml: 'heatmap_grad_cam' with
'heatmap_image_class_<ID>', 'heatmap_guided_grad_cam' with 'guided_grad_cam_image_class_<ID>');
gen_dl_model_classification_heatmap adds 'heatmap_confidence_based' with
'heatmap_image_class_<ID>' and 'classification_heatmap_maxdeviation'.
The methods beyond HALCON follow the Grad-CAM pattern: 'heatmap_<method>' with
'heatmap_image_class_<ID>'. The CLI, the batch jobs and the display read entries back with
:func:`heatmap_entry`, never by parsing key strings themselves.

A heatmap's *kind* is the methods' vocabulary (:data:`dlheatmap.methods.base.KINDS`): 'map'
(H x W, drawn over the image) or 'image' (image-shaped, drawn alone).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlheatmap.spec import operator_spec

RESULT_PREFIX = "heatmap_"
DEFAULT_IMAGE_PREFIX = "heatmap_image_class_"
_CLASS_SUFFIX = re.compile(r"_class_(-?\d+)$")


def _halcon_keys() -> tuple[dict[str, str], dict[str, str]]:
    extra = operator_spec("gen_dl_model_heatmap").extra
    return dict(extra["result_keys"]), dict(extra["image_key_prefix"])


def result_key(method: str) -> str:
    """The result dict key of ``method``'s heatmaps: 'heatmap_grad_cam', ..."""
    return _halcon_keys()[0].get(method, f"{RESULT_PREFIX}{method}")


def image_key(method: str, class_id: int) -> str:
    """The key of one class's heatmap inside :func:`result_key`'s dict."""
    return f"{_halcon_keys()[1].get(method, DEFAULT_IMAGE_PREFIX)}{int(class_id)}"


def heatmap_dict(method: str, class_id: int, image: np.ndarray,
                 extras: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """``{result_key(method): {image_key(method, class_id): image, **extras}}``."""
    return {result_key(method): {image_key(method, class_id): image, **(extras or {})}}


def max_deviation_key() -> str:
    """The confidence-based entry's second key: 'classification_heatmap_maxdeviation'."""
    return operator_spec("gen_dl_model_classification_heatmap").extra["max_deviation_key"]


def confidence_based_dict(class_id: int, image: np.ndarray,
                          max_deviation: float) -> dict[str, dict]:
    """gen_dl_model_classification_heatmap's entry: 'heatmap_confidence_based' ->
    {'heatmap_image_class_<ID>': image, 'classification_heatmap_maxdeviation': value}."""
    return heatmap_dict("confidence_based", class_id, image,
                        {max_deviation_key(): float(max_deviation)})


def method_of(key: str) -> str | None:
    """The method a result key belongs to ('heatmap_guided_grad_cam' -> 'guided_grad_cam'), or
    None for a key that is no heatmap entry."""
    halcon = {key_: method for method, key_ in _halcon_keys()[0].items()}
    if key in halcon:
        return halcon[key]
    return key[len(RESULT_PREFIX):] if key.startswith(RESULT_PREFIX) and key != RESULT_PREFIX \
        else None


@dataclass(frozen=True)
class HeatmapEntry:
    """One heatmap read back from a result dict."""

    method: str
    class_id: int
    image: np.ndarray
    #: the other values of the entry's dict (the confidence-based heatmap's maximum deviation)
    extras: Mapping[str, Any]

    @property
    def max_deviation(self) -> float | None:
        """The confidence-based heatmap's maximum deviation; None for other entries."""
        value = self.extras.get(max_deviation_key())
        return None if value is None else float(value)


def class_id_of(image_key_: str) -> int | None:
    """The class ID at the end of an image key ('heatmap_image_class_7' -> 7)."""
    match = _CLASS_SUFFIX.search(str(image_key_))
    return int(match.group(1)) if match else None


def heatmap_entries(result: Mapping) -> list[HeatmapEntry]:
    """Every heatmap entry of a result dict, in the dict's order."""
    entries = []
    for key, value in result.items():
        method = method_of(str(key))
        if method is None or not isinstance(value, Mapping):
            continue
        images = {k: v for k, v in value.items() if class_id_of(k) is not None}
        extras = {k: v for k, v in value.items() if k not in images}
        entries.extend(HeatmapEntry(method, class_id_of(k), np.asarray(v), extras)
                       for k, v in images.items())
    return entries


def heatmap_entry(result: Mapping, key: str | None = None) -> HeatmapEntry:
    """The single heatmap of a result dict (of entry ``key``, if given).

    Raises
    ------
    KeyError
        If there is no heatmap entry (under ``key``).
    """
    if key is not None:
        result = {key: result[key]} if key in result else {}
    entries = heatmap_entries(result)
    if not entries:
        raise KeyError(f"the result holds no heatmap entry{f' {key!r}' if key else ''}")
    return entries[0]


def method_kind(method: str, image: np.ndarray) -> str:
    """'map' or 'image' for a heatmap of ``method`` (the registered method's kind; for an
    unknown method, 'map' for a 2-D array)."""
    from dlheatmap.methods import METHODS

    if method in METHODS:
        return METHODS[method].kind
    return "map" if np.ndim(image) == 2 else "image"
