"""Faithfulness of every explain method on a trained model whose evidence locations are known.

Run with ``.venv/bin/python benchmarks/bench_methods.py [--write]``. The model is the small CNN
of ``tests/models.py`` trained on generated 48 x 48 grey images with one class-coded blob
(square, ring or cross) at a random place on clutter; the blob's box is the ground truth. Each
method explains the true class of held-out images; its maps (image-kind results reduced to
max |value| over channels) are scored with dlheatmap.metrics:

- deletion AUC (zeros baseline, 32 steps; lower is better) and insertion AUC (blurred-image
  baseline, 32 steps; higher is better), class probability;
- average drop % (lower is better) and increase in confidence % (higher is better) of the
  image multiplied by its map;
- pointing game: the map's maximum inside the blob's 13 x 13 box (tolerance 0) and within
  3 pixels of it;
- milliseconds per image for explain (batch of all images, after one warm-up call).

Two reference rows: a random map, and the oracle (1 inside the blob's box, 0 elsewhere).
``--write`` records the table in benchmarks/methods_results.md; ``--only ROW`` measures one
method row again (printed only), e.g. after a row's configuration changed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dlheatmap as dl  # noqa: E402
from benchmarks.machine import describe_machine  # noqa: E402
from dlheatmap import metrics  # noqa: E402
from dlheatmap.methods import METHODS, EigenCAM, Saliency, ScoreCAM  # noqa: E402
from tests import models  # noqa: E402

HALF_BLOB = 6
READING = [
    "Reading the table: on this model the evidence is a bright blob on dark clutter, so "
    "setting pixels to 0 (deletion) removes evidence and clutter alike and separates the "
    "methods from the random map poorly (the oracle box itself scores about as the random "
    "map); insertion from a blurred image and the pointing game discriminate. Maps that hug "
    "the blob (LayerCAM, HiResCAM, XGrad-CAM, saliency) point at it almost always; Grad-CAM "
    "and Grad-CAM++ average gradients over the whole 24 x 24 layer and spread beyond it; "
    "Eigen-CAM is class-agnostic and often highlights clutter. Times are wall-clock times of "
    "one run on a machine shared with other jobs (see the load average): compare them within "
    "a run only.",
    "The AUCMEDI saliency row keeps the gradient's sign and stretches each map from its "
    "minimum to its maximum (no ReLU), so a pixel without gradient lands near the middle of "
    "the range (median pixel about 0.5 here, against 0.03 for plain saliency): the image x "
    "map of the confidence metrics keeps much of the image, hence its lower average drop and "
    "higher increase.",
]
COLUMNS = ["deletion AUC ↓", "insertion AUC ↑", "avg drop % ↓", "increase % ↑",
           "pointing (box) ↑", "pointing (±3 px) ↑", "ms / image"]


AUCMEDI_SALIENCY = "saliency (AUCMEDI: signed max, probability, min-max)"


def variants() -> dict[str, tuple[object, dict]]:
    """Every registered method with its defaults, plus the seed-style variants: name ->
    (method, further explain arguments). A seed's row is configured as spec/methods.md
    reproduces that seed."""
    chosen: dict[str, tuple[object, dict]] = {name: (name, {}) for name in METHODS}
    chosen[AUCMEDI_SALIENCY] = (Saliency(reduce="max"),
                                {"score": "probability", "normalize": "minmax", "eps": 1e-8})
    chosen["eigen_cam (centred)"] = (EigenCAM(centre=True), {})
    chosen["score_cam (channel softmax of logits)"] = (ScoreCAM(channel_softmax=True), {})
    return chosen


def measure(model, images, labels, boxes, method, options: dict) -> list[float]:
    """The metrics of one method's maps, then its milliseconds per image."""
    dl.explain(model, images[:4], method, targets=labels[:4], **options)  # warm-up
    start = time.perf_counter()
    result = dl.explain(model, images, method, targets=labels, **options)
    ms = 1000 * (time.perf_counter() - start) / len(images)
    return [*score(model, images, labels, boxes, as_maps(result.heatmaps)), ms]


def as_maps(heatmaps: np.ndarray) -> np.ndarray:
    """[N, H, W] maps in [0, 1] from explain's first target column."""
    maps = heatmaps[:, 0]
    if maps.ndim == 4:  # an image per target: strength of each pixel
        maps = np.abs(maps).max(axis=-1)
    peak = maps.reshape(len(maps), -1).max(axis=1)
    return np.where(peak[:, None, None] > 0, maps / np.where(peak > 0, peak, 1)[:, None, None],
                    0).astype(np.float32)


def oracle_maps(centres: np.ndarray, size: int) -> np.ndarray:
    maps = np.zeros((len(centres), size, size), np.float32)
    for m, (row, col) in zip(maps, centres, strict=True):
        m[row - HALF_BLOB : row + HALF_BLOB + 1, col - HALF_BLOB : col + HALF_BLOB + 1] = 1
    return maps


def score(model, images, labels, boxes, maps) -> list[float]:
    deletion = metrics.deletion(model, images, maps, labels, baseline="zeros")
    insertion = metrics.insertion(model, images, maps, labels, baseline="blur")
    change = metrics.confidence_change(model, images, maps, labels)
    return [deletion.mean_auc, insertion.mean_auc, change.average_drop,
            change.increase_in_confidence,
            100 * metrics.pointing_game(maps, boxes, tolerance=0).mean(),
            100 * metrics.pointing_game(maps, boxes, tolerance=3).mean()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="held-out images (200)")
    parser.add_argument("--seed", type=int, default=2024, help="image seed (training used 1)")
    parser.add_argument("--write", action="store_true",
                        help="record in benchmarks/methods_results.md")
    parser.add_argument("--only", action="append", metavar="ROW",
                        help="measure only this row (repeatable; printed, not written)")
    args = parser.parse_args(argv)
    if args.only and args.write:
        parser.error("--only measures some rows; --write records the whole table")
    unknown = sorted(set(args.only or ()) - set(variants()))
    if unknown:
        parser.error(f"no rows named {unknown}; rows: {list(variants())}")

    described = describe_machine()
    model = dl.read_dl_model(models.trained_evidence_cnn())
    dl.set_dl_model_param(model, "batch_size", 50)
    images, labels, centres = models.evidence_images(args.images, seed=args.seed)
    size = images.shape[1]
    boxes = [(r - HALF_BLOB, c - HALF_BLOB, r + HALF_BLOB, c + HALF_BLOB) for r, c in centres]
    probabilities = dl.explain(model, images, "eigen_cam").probabilities
    accuracy = 100 * np.mean(probabilities.argmax(axis=1) == labels)
    print(described, f"\naccuracy on the held-out images: {accuracy:.1f} %", flush=True)

    rows = []
    for name, (method, options) in variants().items():
        if args.only and name not in args.only:
            continue
        rows.append((name, measure(model, images, labels, boxes, method, options)))
        print(f"  {name:40s}", " ".join(f"{v:8.3f}" for v in rows[-1][1]), flush=True)
    if args.only:  # a single row, measured again: printed, never written
        return 0
    rng = np.random.default_rng(0)
    for name, maps in (("random map (reference)", rng.random(images.shape[:3]).astype(
            np.float32)), ("oracle: blob box (reference)", oracle_maps(centres, size))):
        rows.append((name, [*score(model, images, labels, boxes, maps), float("nan")]))
        print(f"  {name:40s}", " ".join(f"{v:8.3f}" for v in rows[-1][1]), flush=True)

    table = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, values in rows:
        cells = [f"{v:.3f}" if i < 2 else f"{v:.1f}" for i, v in enumerate(values[:-1])]
        cells.append("-" if np.isnan(values[-1]) else f"{values[-1]:.2f}")
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(table)
    print("\n" + text)
    if args.write:
        header = [
            "# Explanation methods scored by faithfulness metrics", "",
            "Recorded by `.venv/bin/python benchmarks/bench_methods.py --write`. Model: the "
            "small CNN of `tests/models.py: trained_evidence_cnn()` (48 x 48 grey, 3 classes), "
            f"{args.images} held-out images from `evidence_images(seed={args.seed})`, each "
            f"explained for its true class (model accuracy {accuracy:.1f} %). Default layer "
            "(last convolution, 24 x 24) and each method's default score and normalisation, "
            "except in rows that name a configuration: the AUCMEDI row runs AUCMEDI's recipe "
            "(`spec/methods.md`: signed channel maximum, class probability, min-max with eps "
            "1e-8). "
            "Deletion: zeros baseline; insertion: Gaussian-blurred image (sigma 5); both 32 "
            "steps, class probability, trapezoidal AUC. Average drop / increase: image x map "
            "(maps scaled to [0, 1]). Pointing game: maximum in the blob's 13 x 13 box, or "
            "within 3 pixels of it. Image-kind methods are reduced to max |value| over "
            "channels. Times: one `explain` call over all images (batch_size 50) after a "
            "warm-up call, CPU.", "",
            f"Machine: {described}", "", "\n\n".join(READING), "", ""]
        (ROOT / "benchmarks" / "methods_results.md").write_text("\n".join(header) + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
