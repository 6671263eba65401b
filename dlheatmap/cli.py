"""The ``dlheatmap`` command: a heatmap job (:mod:`dlheatmap.jobs`) from the command line.

For each image: read it, preprocess it for the model (HALCON's procedures), compute the
heatmap (HALCON's gen_dl_model_heatmap or dlheatmap.explain), write a picture (the heatmap
over the image, or the guided heatmap alone, with a legend) and one results row (Parquet and
JSON lines), then a browsable report.html; in this process or on a Ray cluster (--engine).

Heatmap methods are looked up in :data:`METHODS`; adding a method is one entry there.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from dlheatmap.jobs.config import JobConfig, JobError
from dlheatmap.jobs.methods import HALCON_METHODS, METHODS, Method

__all__ = ["HALCON_METHODS", "METHODS", "Method", "build_parser", "main"]

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
PROGRESS_THRESHOLD = 10  # show a progress bar from this many images on (on a terminal)


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
  results.parquet       one row per image: image, overlay, method, class_id, class_name,
                        confidence, target_class, top_classes, heatmap statistics (max, mean,
                        area_above_half, peak and centroid in image pixels), seconds; failed
                        images get error and error_code (HALCON's) instead
  results.jsonl         the same rows as JSON lines
  report.html           a gallery of the pictures to open in a browser
  job.json, parts/      the job's settings and its results batch by batch (for --resume)

examples:
  dlheatmap model.onnx photo.jpg
  dlheatmap model.onnx images/ --output heatmaps --class-names good,scratch,dent
  dlheatmap model.onnx images/ --method guided_grad_cam --target-class 2
  dlheatmap model.onnx --glob 'archive/2026-*/**/*.png' -o shift --resume
  dlheatmap model.onnx --manifest lot.parquet --column file -o lot --engine ray
  dlheatmap model.onnx a.png --target-conv-layer /layer4/layer4.1/conv2/Conv --scaling none
  dlheatmap model.onnx a.png --normalization constant_values \\
      --mean 123.675,116.28,103.53 --deviation 58.395,57.12,57.375

exit status:
  0  every image was processed
  1  some images failed (listed on stderr and in the results file); the others were written
  2  bad command line, no images found, an output folder or results file that cannot be
     created, an output folder holding another job (without --resume or --overwrite), or
     the model or an option was refused
  130 interrupted (the finished batches are kept: --resume continues)"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dlheatmap`` command."""
    from dlheatmap import __version__
    from dlheatmap.display import COLOR_SCHEMES
    from dlheatmap.preprocess import NORMALIZATION_TYPES

    parser = argparse.ArgumentParser(
        prog="dlheatmap", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter)
    parser.add_argument("model", type=Path, help="ONNX classification model (.onnx)")
    parser.add_argument("images", nargs="*", type=Path,
                        help="image files and/or folders of images")
    parser.add_argument("--version", action="version", version=f"dlheatmap {__version__}")

    io = parser.add_argument_group("input and output")
    io.add_argument("-o", "--output", type=Path, default=Path("dlheatmap-out"), metavar="DIR",
                    help="folder for pictures and results (default: %(default)s)")
    io.add_argument("-r", "--recursive", action="store_true",
                    help="also take images from sub-folders")
    io.add_argument("--glob", action="append", default=[], metavar="PATTERN",
                    help="images matching a glob pattern, ** for any depth (repeatable)")
    io.add_argument("--manifest", action="append", default=[], type=Path, metavar="FILE",
                    help="images listed in a text file (one path a line) or in a column of a "
                    ".parquet or .csv file (repeatable)")
    io.add_argument("--column", default="path", metavar="NAME",
                    help="the manifest column of paths (default: %(default)s)")
    io.add_argument("--results", type=Path, default=None, metavar="FILE",
                    help="JSON-lines results file (default: OUTPUT/results.jsonl)")
    io.add_argument("--resume", action="store_true",
                    help="continue the job in OUTPUT: skip the images it finished")
    io.add_argument("--overwrite", action="store_true",
                    help="replace the job in OUTPUT (its results and pictures are deleted)")
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

    job = parser.add_argument_group("engine")
    job.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: this process (default); ray: Ray Data, one model per actor "
                     "(pip install 'dlheatmap[ray]')")
    job.add_argument("--address", default=None, metavar="ADDRESS",
                     help="Ray cluster to join (e.g. ray://head:10001 or auto; default: a "
                     "local cluster is started)")
    job.add_argument("--actors", type=_positive_int, default=None, metavar="N",
                     help="Ray actors, one model each (default: one per GPU with --runtime "
                     "gpu, else the cluster's CPUs / --cpus-per-actor)")
    job.add_argument("--cpus-per-actor", type=_positive_int, default=1, metavar="N",
                     help="CPUs per Ray actor, which size its onnxruntime and torch threads "
                     "(default: %(default)s)")

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

def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.images or args.glob or args.manifest):
        parser.error("no images: give image files or folders, --glob or --manifest")
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    # Deprecation notes from inside onnx2torch's converted modules mean nothing to users of
    # the command; dlheatmap's own warnings (GPU fallback, image precision) still show.
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"onnx2torch\.")
            return _run(args)
    except JobError as exc:
        print(f"dlheatmap: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("dlheatmap: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    from dlheatmap.jobs import collect_images, load_model, preprocess_param, run_job

    images = collect_images(args.images, args.recursive, args.glob, args.manifest, args.column)
    config = _config(args)
    if args.engine == "ray":
        # Ray Data's notes on its executor mean nothing here; the job has its own bar
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    model = load_model(config)
    preprocess_param(model, config)  # refuse a bad model or option before work
    # batches of the model's batch_size: --batch-size, or the graph's own fixed batch
    config = dataclasses.replace(config, batch_size=model.params.batch_size)
    show = args.progress
    if show is None:
        show = len(images) >= PROGRESS_THRESHOLD and sys.stderr.isatty() and not args.quiet
    summary = run_job(
        config, images, args.output, engine=args.engine, resume=args.resume,
        overwrite=args.overwrite, jsonl=args.results, progress=show, on_failure=_warn,
        address=args.address, actors=args.actors, cpus_per_actor=args.cpus_per_actor)
    if not args.quiet:
        done = summary.images - summary.failed
        resumed = f", {summary.skipped} done before" if summary.skipped else ""
        print(f"dlheatmap: {done} of {summary.images} image(s) explained with {config.method}"
              f" ({summary.failed} failed{resumed}); {summary.processed} in "
              f"{summary.seconds:.1f} s, {summary.images_per_second:.2f} images/s\n"
              f"  pictures in {summary.out_dir}/, results in {summary.results} and "
              f"{summary.jsonl}, report {summary.report}")
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


def _warn(row: dict) -> None:
    from tqdm import tqdm

    tqdm.write(f"dlheatmap: warning: {row['image']}: {row['error']}", file=sys.stderr)


def _config(args: argparse.Namespace) -> JobConfig:
    return JobConfig(
        model=str(args.model), method=args.method,
        class_names=_class_names(args.class_names) if args.class_names else None,
        range_min=args.range_min, range_max=args.range_max, runtime=args.runtime,
        batch_size=args.batch_size, normalization=args.normalization, mean=args.mean,
        deviation=args.deviation, target_class=args.target_class, gen_param=_gen_param(args),
        color_scheme=args.color_scheme, legend=not args.no_legend)


def _class_names(text: str) -> list[str]:
    if text.startswith("@"):
        try:
            lines = Path(text[1:]).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise JobError(f"--class-names: cannot read {text[1:]}: {exc}") from None
        return [line.strip() for line in lines if line.strip()]
    return [name.strip() for name in text.split(",")]


def _gen_param(args: argparse.Namespace) -> dict:
    gen: dict[str, str] = {}
    for item in args.gen_param:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise JobError(f"--gen-param takes KEY=VALUE, got {item!r}")
        gen[key.strip()] = value
    for key in ("target_conv_layer", "use_conv_only", "scaling"):
        value = getattr(args, key)
        if value is not None:
            gen[key] = value
    return gen


if __name__ == "__main__":
    sys.exit(main())
