"""The main job: heatmap pictures for a model and images made or shipped here.

``./run demo`` runs this script. It takes the demo classifier (``examples/models/shapes.onnx``,
trained by ``examples/demo_model.py``; rebuilt if it is missing), writes six test images in
different file formats (PNG, JPEG, 16-bit TIFF, BMP, 16-bit grey PNG), and runs the
``dlheatmap`` command on them twice: Grad-CAM over the images and Guided Grad-CAM. It prints
the command lines and where the pictures are (``out/demo/`` by default).

    python examples/demo.py [--out DIR] [--model MODEL.onnx --images DIR] [--retrain]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from demo_model import CLASS_NAMES, build_model, demo_model, write_demo_images

HERE = Path(__file__).resolve().parent
SHIPPED_MODEL = HERE / "models" / "shapes.onnx"


def dlheatmap_command() -> list[str]:
    """The installed ``dlheatmap`` command beside this Python, else ``python -m dlheatmap.cli``."""
    found = shutil.which("dlheatmap", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "dlheatmap.cli"]


def run(command: list[str]) -> int:
    shown = " ".join(str(part) for part in command)
    print(f"\n$ {shown}", flush=True)
    return subprocess.run(command, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--model", type=Path, help="another ONNX classifier (with --images)")
    parser.add_argument("--images", type=Path, help="image files folder for --model")
    parser.add_argument("--retrain", action="store_true",
                        help="train the demo model again (a few minutes on two cores)")
    args = parser.parse_args(argv)
    if (args.model is None) != (args.images is None):
        parser.error("--model and --images go together")

    if args.model:
        model, images = args.model, args.images
    else:
        if args.retrain:
            print(f"training the demo model into {SHIPPED_MODEL} ...", flush=True)
            model = build_model(SHIPPED_MODEL)
        else:
            if not SHIPPED_MODEL.is_file():
                print("training the demo model (first use; a few minutes) ...", flush=True)
            model = demo_model(SHIPPED_MODEL)
        images = args.out / "images"
        files = write_demo_images(images)
        print(f"demo model {model} (classes {', '.join(CLASS_NAMES)}); "
              f"{len(files)} images written to {images}/")

    status = 0
    for method in ("grad_cam", "guided_grad_cam"):
        out = args.out / method
        status = max(status, run([*dlheatmap_command(), str(model), str(images), "-o", str(out),
                                  "--method", method]))
    if status == 0:
        _summary(args.out)
    return status


def _summary(out: Path) -> None:
    print("\nResults:")
    for line in (out / "grad_cam" / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "error" in record:
            print(f"  {Path(record['image']).name:18} failed: {record['error']}")
            continue
        peak = record["heatmap"]["peak"]
        where = f"peak at x={peak['x']:.0f}, y={peak['y']:.0f}" if peak else "empty heatmap"
        print(f"  {Path(record['image']).name:18} -> {record['class_name']:6} "
              f"({100 * record['confidence']:5.1f} %), {where}")
    print(f"\nLook at the pictures: {out}/grad_cam/*.png (Grad-CAM over each image) and "
          f"{out}/guided_grad_cam/*.png (Guided Grad-CAM).")


if __name__ == "__main__":
    sys.exit(main())
