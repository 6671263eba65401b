"""The ``dlheatmap`` command: heatmap pictures and a results file for image files.

For each image: read it, preprocess it for the model (HALCON's procedures), compute the
heatmap (HALCON's gen_dl_model_heatmap), write a picture (the heatmap over the image, or the
guided heatmap alone, with a legend) and append one JSON line to the results file.

Heatmap methods are looked up in :data:`METHODS`; adding a method is one entry there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlheatmap.arguments import one_class_or_none
from dlheatmap.errors import ErrorCode, HOperatorError
from dlheatmap.methods import METHODS as ALL_METHODS
from dlheatmap.results import heatmap_dict, heatmap_entry
from dlheatmap.spec import operator_spec

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
PROGRESS_THRESHOLD = 10  # show a progress bar from this many images on (on a terminal)
TOP_CLASSES = 5
# Codes that concern one sample's image: the other images can still be processed.
_SAMPLE_CODES = frozenset({1202, 1302, 1402, 7783, 2894, 9001, 9004, 5200, 5217, 5234})


# --- heatmap methods -------------------------------------------------------------------------

Runner = Callable[[Any, list[dict], Any, dict], list[dict]]


@dataclass(frozen=True)
class Method:
    """A heatmap method the command offers.

    ``run(model, samples, target_classes, gen_param)`` returns one result dict per sample in
    gen_dl_model_heatmap's format: classification results plus one ``'heatmap_*'`` key holding
    ``{'<...>_class_<ID>': heatmap}``. ``kind`` says how to draw the heatmap: 'map' (H x W in
    [0, 1], blended over the image) or 'image' (image-shaped, signed, shown alone).
    """

    name: str
    kind: str
    run: Runner
    help: str


def _halcon_method(name: str) -> Runner:
    def run(model, samples, target_classes, gen_param):
        from dlheatmap.operators import gen_dl_model_heatmap

        return gen_dl_model_heatmap(model, samples, name, target_classes, gen_param)

    return run


def _explain_method(name: str) -> Runner:
    """A method of :func:`dlheatmap.explain` in gen_dl_model_heatmap's result format.

    'target_conv_layer' is explain's ``layer``: a Conv or the Relu after it for layer
    methods, refused by explain (1305) for input-gradient methods, which take none. Every
    other GenParam ('use_conv_only', 'scaling' belong to HALCON's grad_cam) is refused (7911).
    """
    def run(model, samples, target_classes, gen_param):
        from dlheatmap.explain import explain
        from dlheatmap.operators._args import sorted_results

        unsupported = sorted(set(gen_param) - {"target_conv_layer"})
        if unsupported:
            raise HOperatorError(ErrorCode.UNSUPPORTED_GENPARAM,
                                 f"{unsupported}: the methods of dlheatmap.explain take "
                                 "only target_conv_layer", "dlheatmap")
        layer = gen_param.get("target_conv_layer")
        targets = _one_class_for_all(target_classes)
        # 4-D even for grey samples (H x W), which a 3-D stack would make ambiguous
        images = np.stack([np.atleast_3d(sample["image"]) for sample in samples])
        explained = explain(model, images, name, targets, layer or None)
        results = sorted_results(explained.probabilities, model.params)
        for result, heatmaps, class_ids in zip(
                results, explained.heatmaps, explained.class_ids, strict=True):
            result.update(heatmap_dict(name, int(class_ids[0]), heatmaps[0]))
        return results

    return run


def _one_class_for_all(target_classes: Any) -> int | None:
    """gen_dl_model_heatmap's TargetClasses (none, or one class ID for every sample) as
    explain's targets. A bare int, not [ID]: explain reads a sequence as one ID per image."""
    return one_class_or_none(target_classes, 4, "dlheatmap")


def _help(name: str) -> str:
    """A method's --help entry, from the methods' registry."""
    method = ALL_METHODS[name]
    shown = "shown alone" if method.kind == "image" else "blended over the image"
    return f"{method.title}, {shown}"


def _runner(name: str) -> Runner:
    return _halcon_method(name) if name in HALCON_METHODS else _explain_method(name)


HALCON_METHODS = tuple(operator_spec("gen_dl_model_heatmap").extra["methods"])

# HALCON's own methods first, then the rest of the registry in its order
METHODS: dict[str, Method] = {
    name: Method(name, ALL_METHODS[name].kind, _runner(name), _help(name))
    for name in (*HALCON_METHODS, *(n for n in ALL_METHODS if n not in HALCON_METHODS))
}


def _method_help() -> str:
    def listing(names):
        return "; ".join(f"{name}: {METHODS[name].help}" for name in names)

    others = [name for name in METHODS if name not in HALCON_METHODS]
    return (f"HALCON's methods: {listing(HALCON_METHODS)}. Beyond HALCON, from "
            f"dlheatmap.explain: {listing(others)}. Default: %(default)s")


# --- command line ----------------------------------------------------------------------------

DESCRIPTION = """\
Write heatmap pictures for an ONNX image classifier, as HALCON's gen_dl_model_heatmap
computes them, for image files or whole folders (PNG, JPEG, TIFF, BMP; 8 or 16 bit; grey or
colour).

Each image is resized and scaled to what the model takes (HALCON's preprocess_dl_samples:
byte values 0..255 mapped onto --range-min..--range-max by default), classified, and explained
for its top class (or --target-class). The picture shows the heatmap over the image in its
original size, with a legend giving the method, class name, ID and confidence."""

EPILOG = """\
outputs (in --output):
  <image>_<method>.png  one picture per image
  results.jsonl         one JSON object per line and image: image, overlay, method, class_id,
                        class_name, confidence, top_classes, heatmap statistics (max, mean,
                        area_above_half, peak and centroid in image pixels); failed images get
                        "error" and "error_code" instead

examples:
  dlheatmap model.onnx photo.jpg
  dlheatmap model.onnx images/ --output heatmaps --class-names good,scratch,dent
  dlheatmap model.onnx images/ --method guided_grad_cam --target-class 2
  dlheatmap model.onnx a.png --target-conv-layer /layer4/layer4.1/conv2/Conv --scaling none
  dlheatmap model.onnx a.png --normalization constant_values \\
      --mean 123.675,116.28,103.53 --deviation 58.395,57.12,57.375

exit status:
  0  every image was processed
  1  some images failed (listed on stderr and in the results file); the others were written
  2  bad command line, no images found, an output folder or results file that cannot be
     created, or the model or an option was refused
  130 interrupted"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dlheatmap`` command."""
    from dlheatmap import __version__
    from dlheatmap.display import COLOR_SCHEMES
    from dlheatmap.preprocess import NORMALIZATION_TYPES

    parser = argparse.ArgumentParser(
        prog="dlheatmap", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter)
    parser.add_argument("model", type=Path, help="ONNX classification model (.onnx)")
    parser.add_argument("images", nargs="+", type=Path,
                        help="image files and/or folders of images")
    parser.add_argument("--version", action="version", version=f"dlheatmap {__version__}")

    io = parser.add_argument_group("input and output")
    io.add_argument("-o", "--output", type=Path, default=Path("dlheatmap-out"), metavar="DIR",
                    help="folder for pictures and results (default: %(default)s)")
    io.add_argument("-r", "--recursive", action="store_true",
                    help="also take images from sub-folders")
    io.add_argument("--results", type=Path, default=None, metavar="FILE",
                    help="results file (default: OUTPUT/results.jsonl)")
    io.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help=f"progress bar (default: on a terminal, from {PROGRESS_THRESHOLD} "
                    "images on)")
    io.add_argument("-q", "--quiet", action="store_true", help="print only errors")

    model = parser.add_argument_group("model")
    model.add_argument("--class-names", metavar="NAMES",
                       help="class names in output order: comma-separated, or @FILE with one "
                       "name per line")
    model.add_argument("--runtime", choices=("cpu", "gpu"), default=None,
                       help="HALCON runtime (gpu falls back to cpu with a warning)")
    model.add_argument("--batch-size", type=_positive_int, default=8, metavar="N",
                       help="images per heatmap call (default: %(default)s)")

    pre = parser.add_argument_group("preprocessing (HALCON's create_dl_preprocess_param)")
    pre.add_argument("--range-min", type=float, default=None, metavar="VALUE",
                     help="image_range_min the model expects (HALCON default -127)")
    pre.add_argument("--range-max", type=float, default=None, metavar="VALUE",
                     help="image_range_max the model expects (HALCON default 128)")
    pre.add_argument("--normalization", choices=NORMALIZATION_TYPES, default="none",
                     help="normalization type (default: %(default)s)")
    pre.add_argument("--mean", type=_numbers, default=None, metavar="M[,M,M]",
                     help="mean_values_normalization for 'constant_values' (grey values)")
    pre.add_argument("--deviation", type=_numbers, default=None, metavar="D[,D,D]",
                     help="deviation_values_normalization for 'constant_values'")

    heat = parser.add_argument_group("heatmap (HALCON's gen_dl_model_heatmap)")
    heat.add_argument("-m", "--method", choices=tuple(METHODS), default="grad_cam",
                      metavar="METHOD", help=_method_help())
    heat.add_argument("--target-class", type=int, default=None, metavar="ID",
                      help="class ID to explain in every image (default: each image's top "
                      "class)")
    heat.add_argument("--target-conv-layer", metavar="NAME",
                      help="GenParam target_conv_layer: a Conv layer name from the model's "
                      "'summary', for the methods beyond HALCON also the Relu after it "
                      "(default: the deepest convolution larger than 1 x 1; saliency and "
                      "guided_backprop take none)")
    heat.add_argument("--use-conv-only", choices=("true", "false"),
                      help="GenParam use_conv_only (grad_cam only; HALCON default true)")
    heat.add_argument("--scaling", choices=("scale_after_relu", "scale_before_relu", "none"),
                      help="GenParam scaling (grad_cam only; HALCON default "
                      "scale_after_relu)")
    heat.add_argument("--gen-param", action="append", default=[], metavar="KEY=VALUE",
                      help="any other GenParam entry (repeatable)")

    show = parser.add_argument_group("display (HALCON's dev_display_dl_data)")
    show.add_argument("--color-scheme", choices=COLOR_SCHEMES, default="jet",
                      help="heatmap colours (default: %(default)s)")
    show.add_argument("--no-legend", action="store_true", help="pictures without a legend")
    return parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and epilog's lines; help column at 28, at most 100 wide."""

    def __init__(self, prog: str):
        import shutil

        width = min(100, shutil.get_terminal_size((100, 24)).columns)
        super().__init__(prog, max_help_position=28, width=width)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _numbers(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


# --- running ---------------------------------------------------------------------------------

class UsageError(Exception):
    """Bad input that stops the whole run (exit status 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    # Deprecation notes from inside onnx2torch's converted modules mean nothing to users of
    # the command; dlheatmap's own warnings (GPU fallback, image precision) still show.
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"onnx2torch\.")
            return _run(args)
    except UsageError as exc:
        print(f"dlheatmap: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("dlheatmap: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    from dlheatmap.imaging import find_images

    try:
        files = find_images(args.images, args.recursive)
    except FileNotFoundError as exc:
        raise UsageError(f"no such file or folder: {exc}") from None
    if not files:
        raise UsageError("no image files found in " + ", ".join(map(str, args.images)))
    model = _load_model(args)
    preprocess_param = _preprocess_param(model, args)
    method = METHODS[args.method]
    gen_param = _gen_param(args)
    out_dir = args.output
    _make_folder(out_dir, "output folder")
    results_path = args.results or out_dir / "results.jsonl"
    writer = _Writer(out_dir, method, args)
    failures = 0
    with _open_results(results_path) as results, _progress(files, args) as bar:
        for batch in _chunks(files, args.batch_size):
            for record in _process(batch, model, preprocess_param, method, gen_param, args,
                                   writer):
                if "error" in record:
                    failures += 1
                    _say(bar, f"dlheatmap: warning: {record['image']}: {record['error']}")
                results.write(json.dumps(record) + "\n")
                results.flush()
                bar.update(1)
    if not args.quiet:
        done = len(files) - failures
        print(f"dlheatmap: {done} of {len(files)} image(s) explained with {method.name}; "
              f"pictures in {out_dir}/, results in {results_path}")
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _make_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {what} {folder}: {exc.strerror or exc}") from None


def _open_results(path: Path):
    """The results file opened for writing; its folder is created as --output's is. Checked
    before any image is processed, so a bad path costs no work."""
    if path.is_dir():
        raise UsageError(f"--results: {path} is a folder; give a file name")
    _make_folder(path.parent, "results folder")
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--results: cannot write {path}: {exc.strerror or exc}") from None


def _load_model(args: argparse.Namespace):
    from dlheatmap.operators import read_dl_model, set_dl_model_param

    if not args.model.is_file():
        raise UsageError(f"model file not found: {args.model}")
    try:
        model = read_dl_model(args.model)
    except HOperatorError as exc:
        raise UsageError(f"cannot read model {args.model}: {exc}") from None
    if model.info.model_type != "classification":
        raise UsageError(f"{args.model} is a {model.info.model_type!r} model; dlheatmap "
                         "explains classification models (one image input, one [batch, "
                         "classes] output)")
    settings: list[tuple[str, Any]] = []
    if args.class_names:
        settings.append(("class_names", _class_names(args.class_names)))
    settings.extend(_range_settings(args, model.params.image_range_max))
    if args.runtime:
        settings.append(("runtime", args.runtime))
    for name, value in settings:
        try:
            set_dl_model_param(model, name, value)
        except HOperatorError as exc:
            raise UsageError(f"--{name.replace('_', '-')}: {exc}") from None
    # One onnxruntime batch per heatmap call where the graph allows it; a graph with a fixed
    # batch size refuses (7788) and dlheatmap pads batches itself.
    with contextlib.suppress(HOperatorError):
        set_dl_model_param(model, "batch_size", args.batch_size)
    return model


def _range_settings(args: argparse.Namespace, current_max: float) -> list[tuple[str, float]]:
    """--range-min and --range-max in an order that keeps the minimum below the maximum after
    each step: a range moved above the current maximum needs its new maximum first."""
    settings = [(name, value) for name, value in (("image_range_min", args.range_min),
                                                   ("image_range_max", args.range_max))
                if value is not None]
    if args.range_min is not None and args.range_min >= current_max:
        settings.reverse()
    return settings


def _class_names(text: str) -> list[str]:
    if text.startswith("@"):
        try:
            lines = Path(text[1:]).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"--class-names: cannot read {text[1:]}: {exc}") from None
        return [line.strip() for line in lines if line.strip()]
    return [name.strip() for name in text.split(",")]


def _preprocess_param(model, args: argparse.Namespace) -> dict:
    from dlheatmap.preprocess import create_dl_preprocess_param_from_model

    extra: dict[str, Any] = {}
    if args.mean is not None:
        extra["mean_values_normalization"] = args.mean
    if args.deviation is not None:
        extra["deviation_values_normalization"] = args.deviation
    try:
        return create_dl_preprocess_param_from_model(
            model, args.normalization, "full_domain", [], [], extra)
    except HOperatorError as exc:
        raise UsageError(f"preprocessing options: {exc}") from None


def _gen_param(args: argparse.Namespace) -> dict:
    gen: dict[str, Any] = {}
    for item in args.gen_param:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--gen-param takes KEY=VALUE, got {item!r}")
        gen[key.strip()] = value
    for key in ("target_conv_layer", "use_conv_only", "scaling"):
        value = getattr(args, key)
        if value is not None:
            gen[key] = value
    return gen


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _progress(files: list[Path], args: argparse.Namespace):
    from tqdm import tqdm

    show = args.progress
    if show is None:
        show = len(files) >= PROGRESS_THRESHOLD and sys.stderr.isatty() and not args.quiet
    return tqdm(total=len(files), unit="image", desc="dlheatmap", file=sys.stderr,
                disable=not show, dynamic_ncols=True)


def _say(bar, message: str) -> None:
    bar.write(message, file=sys.stderr)


# --- one batch -------------------------------------------------------------------------------

@dataclass
class _Item:
    path: Path
    original: np.ndarray | None = None
    sample: dict | None = None
    error: HOperatorError | None = None


def _process(files: list[Path], model, preprocess_param: dict, method: Method,
             gen_param: dict, args: argparse.Namespace, writer: _Writer) -> Iterator[dict]:
    items = [_prepare(path, preprocess_param) for path in files]
    ready = [item for item in items if item.error is None]
    results = _explain(model, ready, method, gen_param, args) if ready else {}
    for item in items:
        record = None
        outcome = results.get(id(item)) if item.error is None else None
        if isinstance(outcome, HOperatorError):
            item.error = outcome
        elif outcome is not None:
            try:
                record = writer.write(item, outcome)
            except HOperatorError as exc:  # the picture could not be written
                item.error = exc
        yield record if record is not None else _failure(item)


def _prepare(path: Path, preprocess_param: dict) -> _Item:
    from dlheatmap.imaging import load_image
    from dlheatmap.preprocess import preprocess_dl_samples

    item = _Item(path)
    try:
        item.original = load_image(path)
        item.sample = {"image": item.original}
        preprocess_dl_samples([item.sample], preprocess_param)
    except HOperatorError as exc:
        item.error = exc
    return item


def _explain(model, items: list[_Item], method: Method, gen_param: dict,
             args: argparse.Namespace) -> dict[int, Any]:
    """Results by item id; a batch that fails is retried image by image."""
    try:
        results = method.run(model, [item.sample for item in items], _target(args), gen_param)
        return {id(item): result for item, result in zip(items, results, strict=True)}
    except HOperatorError as exc:
        if exc.error_code not in _SAMPLE_CODES:
            raise UsageError(f"{method.name}: {exc}") from None
        if len(items) == 1:
            return {id(items[0]): exc}
    outcome: dict[int, Any] = {}
    for item in items:
        outcome.update(_explain(model, [item], method, gen_param, args))
    return outcome


def _target(args: argparse.Namespace) -> list[int]:
    return [] if args.target_class is None else [args.target_class]


def _failure(item: _Item) -> dict:
    error = item.error
    return {"image": os.fspath(item.path), "error": str(error),
            "error_code": getattr(error, "error_code", None)}


class _Writer:
    """Writes pictures under unique names and builds the result records."""

    def __init__(self, out_dir: Path, method: Method, args: argparse.Namespace):
        self.out_dir = out_dir
        self.method = method
        self.scheme = args.color_scheme
        self.legend = not args.no_legend
        self.used: set[str] = set()

    def write(self, item: _Item, result: dict) -> dict:
        from dlheatmap.display import legend_for, render_heatmap, write_png

        entry = heatmap_entry(result)
        class_id, heatmap = entry.class_id, entry.image
        ids = list(result["classification_class_ids"])
        names = list(result["classification_class_names"])
        confidences = list(result["classification_confidences"])
        index = ids.index(class_id)
        legend = None
        if self.legend:
            legend = legend_for(result, entry,
                                scheme=self.scheme if self.method.kind == "map" else None)
        picture = render_heatmap(item.original, heatmap, self.method.kind, self.scheme, legend)
        path = write_png(picture, self._name(item.path))
        height, width = item.original.shape[:2]
        return {
            "image": os.fspath(item.path),
            "overlay": os.fspath(path),
            "method": self.method.name,
            "width": width,
            "height": height,
            "class_id": class_id,
            "class_name": str(names[index]),
            "confidence": float(confidences[index]),
            "top_classes": [
                {"class_id": int(i), "class_name": str(n), "confidence": float(c)}
                for i, n, c in list(zip(ids, names, confidences, strict=True))[:TOP_CLASSES]],
            "heatmap": heatmap_statistics(heatmap, self.method.kind, (height, width)),
        }

    def _name(self, source: Path) -> Path:
        stem = f"{source.stem}_{self.method.name}"
        name, counter = stem, 1
        while name in self.used:
            counter += 1
            name = f"{stem}-{counter}"
        self.used.add(name)
        return self.out_dir / f"{name}.png"


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


if __name__ == "__main__":
    sys.exit(main())
