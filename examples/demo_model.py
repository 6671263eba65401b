"""A small demo classifier and images for it, made here: nothing is downloaded.

The classifier tells three shapes apart (a filled square, a ring, a cross) drawn in a random
colour at a random place on a cluttered background. Because the evidence sits at a known
place, its heatmaps can be judged by eye (and by the tests). The model takes images in
HALCON's default grey value range -127..128 (the mapping onto 0..1 is the graph's first
operation), so that images preprocessed with HALCON's defaults fit it; its class names are
stored in the ONNX file's metadata, where dlheatmap's read_dl_model finds them.

The trained file ships as ``examples/models/shapes.onnx`` (about 100 kB); training it again
takes a few minutes on two CPU cores and gives an equivalent, not bit-identical, model::

    python examples/demo_model.py [examples/models/shapes.onnx]
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

CLASS_NAMES = ("square", "ring", "cross")
SIZE = 64  # the model's input width and height
VERSION = "shapes-v3"  # stored in the file; a file with another version is rebuilt


# --- images ----------------------------------------------------------------------------------

def shape_mask(label: int, scale: float) -> np.ndarray:
    """Boolean mask of a class shape, about 13 * scale pixels across."""
    radius = max(4, round(6 * scale))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    if label == 0:  # filled square
        inner = round(0.75 * radius)
        return (np.abs(yy) <= inner) & (np.abs(xx) <= inner)
    if label == 1:  # ring
        distance = np.hypot(yy, xx)
        return (distance <= radius) & (distance >= radius - max(2, radius // 3))
    half_width = max(1, radius // 4)  # cross
    return (np.abs(yy) <= half_width) | (np.abs(xx) <= half_width)


def shape_images(count: int, seed: int, size: int = SIZE, grey_fraction: float = 0.0,
                 empty_fraction: float = 0.0):
    """Images with one coloured class shape each.

    Returns images [N, size, size, 3] in 0..1 (float32), labels [N] and the shapes' centres
    [N, 2] as (row, column). Backgrounds are a smooth colour gradient with noise and a few
    small distractor dots; ``grey_fraction`` of the images are turned grey (all channels
    equal) so that the model also handles grey files; ``empty_fraction`` of them get no shape
    (label -1, centre (-1, -1)).
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size] / size
    images = np.empty((count, size, size, 3), np.float32)
    labels = rng.integers(0, len(CLASS_NAMES), count)
    centres = np.empty((count, 2), int)
    for index in range(count):
        start, slope_r, slope_c = rng.uniform(0.05, 0.35, (3, 3))
        image = start + 0.3 * (slope_r * rows[..., None] + slope_c * cols[..., None])
        image += rng.normal(0.0, 0.04, image.shape)
        for _ in range(rng.integers(2, 6)):  # distractor dots
            r, c = rng.integers(0, size - 3, 2)
            image[r : r + rng.integers(2, 4), c : c + rng.integers(2, 4)] = rng.uniform(0, 1, 3)
        if empty_fraction and rng.uniform() < empty_fraction:
            labels[index] = -1
            images[index] = np.clip(image, 0.0, 1.0)
            centres[index] = (-1, -1)
            continue
        mask = shape_mask(int(labels[index]), rng.uniform(0.8 * size / 64, 1.2 * size / 64))
        half = mask.shape[0] // 2
        centre = rng.integers(half + 2, size - half - 2, 2)
        colour = rng.uniform(0.5, 1.0, 3)  # brighter than the background, also in grey
        colour[rng.integers(0, 3)] = 1.0
        patch = image[centre[0] - half : centre[0] + half + 1,
                      centre[1] - half : centre[1] + half + 1]
        patch[mask] = colour
        if rng.uniform() < grey_fraction:
            image[:] = image.mean(axis=2, keepdims=True)
        images[index] = np.clip(image, 0.0, 1.0)
        centres[index] = centre
    return images, labels, centres


# --- model -----------------------------------------------------------------------------------

def build_model(path: Path, seed: int = 0, count: int = 6000, epochs: int = 8) -> Path:
    """Train the shape classifier and export it to ONNX at ``path``.

    Besides the cross-entropy on images with a shape, the logits of images without one are
    pulled towards 0: a background then adds nothing to any class, so Grad-CAM (which sees
    every positive contribution) shows the shapes rather than the background.
    """
    import onnx
    import torch
    from torch import nn

    torch.manual_seed(seed)
    features = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, len(CLASS_NAMES)),
    )
    images, labels, _ = shape_images(count, seed + 1, grey_fraction=0.2, empty_fraction=0.15)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    y = torch.from_numpy(labels)
    optimiser = torch.optim.Adam(features.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    for _epoch in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            optimiser.zero_grad()
            logits, target = features(x[batch]), y[batch]
            shaped = target >= 0
            loss = nn.functional.cross_entropy(logits[shaped], target[shaped])
            if not shaped.all():
                loss = loss + logits[~shaped].pow(2).mean()
            loss.backward()
            optimiser.step()
        schedule.step()

    class HalconRange(nn.Module):
        """Takes grey values in -127..128 (HALCON's default range) as the network saw 0..1."""

        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, image):
            return self.inner((image + 127.0) / 255.0)

    net = HalconRange(features).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(partial), dynamo=False,
                          input_names=["image"], output_names=["scores"],
                          dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}})
    model = onnx.load(str(partial))
    for key, value in (("class_names", json.dumps(list(CLASS_NAMES))),
                       ("dlheatmap_demo", VERSION)):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(partial))
    partial.replace(path)
    return path


def demo_model(path: Path) -> Path:
    """The demo model at ``path``; trained there first if missing or outdated (minutes)."""
    if path.is_file() and _version(path) == VERSION:
        return path
    return build_model(path)


def _version(path: Path) -> str | None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # an unreadable file is rebuilt
        return None
    return next((p.value for p in model.metadata_props if p.key == "dlheatmap_demo"), None)


# --- demo image files ------------------------------------------------------------------------

# (file name, how to store it): the formats and pixel types dlheatmap reads.
DEMO_FILES = (
    ("square_rgb8.png", "png"),
    ("ring_rgb8.jpg", "jpeg"),
    ("cross_rgb16.tif", "tiff16"),
    ("square_grey8.bmp", "grey8"),
    ("ring_grey16.png", "grey16"),
    ("cross_rgb8.png", "png"),
)


def example_inputs(argv: list[str], out_dir: str) -> tuple[str, str, str] | None:
    """(model file, image folder, output folder) of an example script: the three arguments
    given, or with none the demo model and images made here (under ``out_dir``); None for any
    other number of arguments."""
    if len(argv) == 3:
        model_file, image_dir, out_dir = argv
        return model_file, image_dir, out_dir
    if argv:
        return None
    model_file = str(demo_model(Path(__file__).with_name("models") / "shapes.onnx"))
    image_dir = str(write_demo_images(Path(out_dir) / "images")[0].parent)
    return model_file, image_dir, out_dir


def write_demo_images(folder: Path, seed: int = 7, scale: int = 2) -> list[Path]:
    """Write one image per entry of :data:`DEMO_FILES` into ``folder``.

    Images are drawn at ``scale`` times the model size (so they get resized) with the class
    named in the file name. ``truth.json`` beside them records each file's class and the
    shape's centre (x, y in the file's pixels). Returns the image paths.
    """
    import tifffile
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths, truth = [], {}
    for index, (name, kind) in enumerate(DEMO_FILES):
        label = CLASS_NAMES.index(name.split("_")[0])
        image, (row, col) = _image_of_class(label, seed + index, SIZE * scale)
        truth[name] = {"class_id": label, "class_name": CLASS_NAMES[label], "x": int(col),
                       "y": int(row)}
        path = folder / name
        if kind in ("png", "jpeg"):
            Image.fromarray(_to_uint8(image)).save(path, quality=92)
        elif kind == "tiff16":
            tifffile.imwrite(path, np.rint(image * 65535).astype(np.uint16), photometric="rgb")
        elif kind == "grey8":
            Image.fromarray(_to_uint8(image.mean(axis=2))).save(path)
        else:  # grey16
            grey = np.rint(image.mean(axis=2) * 65535).astype(np.uint16)
            Image.fromarray(grey).save(path)  # uint16: mode I;16
        paths.append(path)
    (folder / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return paths


def _image_of_class(label: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    for attempt in range(100):
        images, labels, centres = shape_images(1, seed * 1000 + attempt, size)
        if labels[0] == label:
            return images[0], centres[0]
    raise RuntimeError("no image of the class drawn")  # cannot happen with 3 classes


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


if __name__ == "__main__":
    shipped = Path(__file__).with_name("models") / "shapes.onnx"
    print(build_model(Path(sys.argv[1]) if len(sys.argv) > 1 else shipped))
