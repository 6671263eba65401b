"""The per-image work of a job: read, preprocess, classify and explain, draw, one result row.

The same :class:`HeatmapWorker` runs in the command's process and in each Ray actor (one
model per worker). Reading is split from the rest (:func:`decode`) so that Ray can decode
images in tasks and keep the actors for the model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlheatmap.errors import (
    WRONG_COUNT_BASE,
    WRONG_TYPE_BASE,
    WRONG_VALUE_BASE,
    ErrorCode,
    HOperatorError,
)
from dlheatmap.jobs.config import JobConfig, JobError, load_model, preprocess_param
from dlheatmap.jobs.methods import METHODS, Method
from dlheatmap.results import heatmap_entry

TOP_CLASSES = 5
# Codes that concern one sample's image: the other images can still be processed.
SAMPLE_CODES = frozenset({
    # the sample image (parameter 2): wrong type, value or number of values
    WRONG_TYPE_BASE + 2, WRONG_VALUE_BASE + 2, WRONG_COUNT_BASE + 2,
    ErrorCode.INPUTS_MISSING, ErrorCode.DICT_KEY_MISSING, ErrorCode.WRONG_GREY_TYPE,
    ErrorCode.WRONG_IMAGE_SIZE, ErrorCode.FILE_NOT_FOUND, ErrorCode.WRONG_PIXEL_TYPE,
    ErrorCode.NOT_AN_IMAGE_FILE})


@dataclass(frozen=True)
class WorkItem:
    """One image of a job: its position in the job's list, its file and its picture's file
    (a name inside the output folder, fixed by the driver so that reruns agree)."""

    index: int
    image: str
    overlay: str


@dataclass
class Decoded:
    """A work item with its image read (``original``) or the error reading it raised."""

    item: WorkItem
    original: np.ndarray | None = None
    error: HOperatorError | None = None
    seconds: float = 0.0


def decode(item: WorkItem) -> Decoded:
    """Read one image file; an unreadable or truncated file becomes an error (5200, 5234)."""
    from dlheatmap.imaging import load_image

    start = time.perf_counter()
    try:
        return Decoded(item, load_image(item.image), seconds=time.perf_counter() - start)
    except HOperatorError as exc:
        return Decoded(item, error=exc, seconds=time.perf_counter() - start)


class HeatmapWorker:
    """One model and what a job does with it, batch after batch.

    Parameters
    ----------
    config : JobConfig
        The job; its model is loaded here, once.
    out_dir : path-like
        The folder the pictures go to.
    """

    def __init__(self, config: JobConfig, out_dir: str | os.PathLike):
        self.config = config
        self.out_dir = Path(out_dir)
        self.model = load_model(config)
        self.preprocess_param = preprocess_param(self.model, config)
        self.method: Method = METHODS[config.method]

    def process(self, items: list[WorkItem]) -> list[dict]:
        """Result rows of ``items`` (decoded here), in their order."""
        return self.process_decoded([decode(item) for item in items])

    def process_decoded(self, decoded: list[Decoded]) -> list[dict]:
        """Result rows of images already read, in their order.

        Raises
        ------
        JobError
            The method refused the job's options (an error that is no image's own).
        """
        from dlheatmap.preprocess import preprocess_dl_samples

        start = time.perf_counter()
        samples: dict[int, dict] = {}
        for entry in decoded:
            if entry.error is None:
                sample = {"image": entry.original}
                try:
                    preprocess_dl_samples([sample], self.preprocess_param)
                    samples[entry.item.index] = sample
                except HOperatorError as exc:
                    entry.error = exc
        outcomes = self._explain(samples) if samples else {}
        rows = [self._row(entry, outcomes.get(entry.item.index)) for entry in decoded]
        share = (time.perf_counter() - start) / max(len(decoded), 1)
        for row, entry in zip(rows, decoded, strict=True):
            row["seconds"] = round(share + entry.seconds, 6)
        return rows

    def _explain(self, samples: dict[int, dict]) -> dict[int, Any]:
        """Results by item index; a batch that fails is retried image by image."""
        try:
            results = self.method.run(self.model, list(samples.values()),
                                      self.config.target_classes, self.config.gen_param)
            return dict(zip(samples, results, strict=True))
        except HOperatorError as exc:
            if exc.error_code not in SAMPLE_CODES:
                raise JobError(f"{self.method.name}: {exc}") from None
            if len(samples) == 1:
                return {next(iter(samples)): exc}
        outcome: dict[int, Any] = {}
        for index, sample in samples.items():
            outcome.update(self._explain({index: sample}))
        return outcome

    def _row(self, entry: Decoded, outcome: Any) -> dict:
        if isinstance(outcome, HOperatorError):
            entry.error = outcome
        if entry.error is None:
            try:
                return self._success(entry, outcome)
            except HOperatorError as exc:  # the picture could not be written
                entry.error = exc
        return error_row(entry.item, self.method.name, entry.error)

    def _success(self, entry: Decoded, result: dict) -> dict:
        from dlheatmap.display import legend_for, render_heatmap

        heat = heatmap_entry(result)
        ids = list(result["classification_class_ids"])
        names = [str(name) for name in result["classification_class_names"]]
        confidences = [float(c) for c in result["classification_confidences"]]
        at = ids.index(heat.class_id)
        legend = None
        if self.config.legend:
            scheme = self.config.color_scheme if self.method.kind == "map" else None
            legend = legend_for(result, heat, scheme=scheme)
        picture = render_heatmap(entry.original, heat.image, self.method.kind,
                                 self.config.color_scheme, legend)
        overlay = self.out_dir / entry.item.overlay
        write_png_atomically(picture, overlay)
        height, width = entry.original.shape[:2]
        return {
            "index": entry.item.index,
            "image": entry.item.image,
            "overlay": os.fspath(overlay),
            "method": self.method.name,
            "width": width,
            "height": height,
            "class_id": heat.class_id,
            "class_name": names[at],
            "confidence": confidences[at],
            "target_class": self.config.target_class,
            "top_classes": [
                {"class_id": int(i), "class_name": n, "confidence": c}
                for i, n, c in list(zip(ids, names, confidences, strict=True))[:TOP_CLASSES]],
            "heatmap": heatmap_statistics(heat.image, self.method.kind, (height, width)),
        }


def error_row(item: WorkItem, method: str, error: BaseException | None) -> dict:
    """The result row of an image that failed: its error text and HALCON code."""
    return {"index": item.index, "image": item.image, "method": method, "error": str(error),
            "error_code": getattr(error, "error_code", None)}


def write_png_atomically(picture: np.ndarray, path: Path) -> None:
    """Write the picture under a temporary name and rename it: a picture is whole or absent.

    Raises
    ------
    HOperatorError
        5212 if the file cannot be written (a folder in its place, no permission).
    """
    from dlheatmap.display import write_png

    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    write_png(picture, temporary)
    try:
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise HOperatorError(ErrorCode.WRITE_FAILED, f"cannot write {path}: "
                             f"{exc.strerror or exc}", "dlheatmap") from None


def heatmap_statistics(heatmap: np.ndarray, kind: str, image_size: tuple[int, int]) -> dict:
    """Summary numbers of a heatmap, positions in the original image's pixels.

    The statistics are taken over a strength map: the heatmap itself for 'map', the sum of
    absolute values over channels for 'image'. ``area_above_half`` is the fraction of pixels
    whose strength is at least half the maximum; ``peak`` the strongest pixel and ``centroid``
    the strength-weighted mean position, as (x, y) in the original image (pixel centres
    mapped between the sizes); None where the map is all zero.
    """
    data = np.asarray(heatmap, np.float64)
    strength = data if kind == "map" else np.abs(data).reshape(*data.shape[:2], -1).sum(axis=2)
    strength = np.clip(strength, 0.0, None) if kind == "map" else strength
    height, width = strength.shape
    scale_y, scale_x = image_size[0] / height, image_size[1] / width
    peak_value = float(strength.max())
    total = float(strength.sum())
    stats: dict[str, Any] = {
        "max": peak_value,
        "mean": float(strength.mean()),
        "area_above_half": float((strength >= 0.5 * peak_value).mean()) if peak_value > 0 else 0.0,
        "peak": None,
        "centroid": None,
    }
    if peak_value > 0:
        row, col = np.unravel_index(int(strength.argmax()), strength.shape)
        stats["peak"] = {"x": round((col + 0.5) * scale_x - 0.5, 2),
                         "y": round((row + 0.5) * scale_y - 0.5, 2)}
        rows, cols = np.mgrid[0:height, 0:width]
        stats["centroid"] = {
            "x": round((float((cols * strength).sum()) / total + 0.5) * scale_x - 0.5, 2),
            "y": round((float((rows * strength).sum()) / total + 0.5) * scale_y - 0.5, 2)}
    return stats
