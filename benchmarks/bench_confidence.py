"""The confidence-based heatmap's time per image against Grad-CAM's, side by side in one run.

Run with ``.venv/bin/python benchmarks/bench_confidence.py [--write]``. Both operators run on
the same model, images and batch after a warm-up call; the median of the timed calls, divided
by the number of images, is reported, and their ratio. Models: the trained evidence CNN of
``tests/models.py`` (48 x 48 grey) with squares of 12 in steps of 4 (100 positions), the
shipped demo model (64 x 64) with 8 in steps of 2 (841 positions), and a random-weight
MobileNetV3-small at 224 x 224 with MVTec's example values 30 and 10 (441 positions).
``--write`` records the table in benchmarks/RESULTS.md, section
"Confidence-based heatmap against Grad-CAM".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIDENCE_HEADING = "## Confidence-based heatmap against Grad-CAM"


def _cases() -> dict[str, tuple[Path, int, int, int]]:
    """name -> (model file, images, feature_size, sampling_size)."""
    from tests import models

    return {
        "evidence CNN 48 x 48": (models.trained_evidence_cnn(), 16, 12, 4),
        "demo shapes 64 x 64": (ROOT / "examples" / "models" / "shapes.onnx", 8, 8, 2),
        "MobileNetV3-small 224 x 224": (
            models.torchvision_model("mobilenet_v3_small", size=224, num_classes=1000), 2,
            30, 10),
    }


def _timed(call, repeats: int) -> float:
    call()  # warm-up: sessions, modules
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(path: Path, count: int, feature: int, step: int, repeats: int) -> dict:
    import dlheatmap as dl
    from dlheatmap.occlusion import square_starts

    model = dl.read_dl_model(path)
    height = dl.get_dl_model_param_s(model, "image_height")
    width = dl.get_dl_model_param_s(model, "image_width")
    channels = dl.get_dl_model_param_s(model, "image_num_channels")
    rng = np.random.default_rng(0)
    samples = [{"image": rng.uniform(-1, 1, (height, width, channels)).astype(np.float32)}
               for _ in range(count)]
    results = dl.apply_dl_model(model, samples, [])
    options = {"feature_size": feature, "sampling_size": step}
    grad_cam = _timed(lambda: dl.gen_dl_model_heatmap(model, samples, "grad_cam", [], None),
                      repeats)
    confidence = _timed(lambda: dl.gen_dl_model_classification_heatmap(
        model, samples, [dict(r) for r in results], options), repeats)
    positions = (len(square_starts(height, feature, step))
                 * len(square_starts(width, feature, step)))
    return {"positions": positions, "grad_cam_ms": 1000 * grad_cam / count,
            "confidence_ms": 1000 * confidence / count}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.machine import describe_machine, write_section

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="record in benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    machine = describe_machine()
    lines = ["| model | images per call | feature / sampling size | positions | "
             "grad_cam ms / image | confidence-based ms / image | ratio |",
             "|---|---|---|---|---|---|---|"]
    for name, (path, count, feature, step) in _cases().items():
        found = measure(path, count, feature, step, args.repeats)
        ratio = found["confidence_ms"] / found["grad_cam_ms"]
        lines.append(f"| {name} | {count} | {feature} / {step} | {found['positions']} | "
                     f"{found['grad_cam_ms']:.2f} | {found['confidence_ms']:.1f} | "
                     f"{ratio:.0f} |")
        print(lines[-1], flush=True)
    body = [f"Recorded by `.venv/bin/python benchmarks/bench_confidence.py --write`: medians of "
            f"{args.repeats} timed calls after a warm-up call, random images, CPU; both "
            "operators on the same model, images and call.", "", f"Machine: {machine}", "",
            *lines, "",
            "The confidence-based heatmap classifies every occluded copy (one inference per "
            "square position, batched through onnxruntime), Grad-CAM needs one inference "
            "with its backward tail: the ratio grows with the number of positions, as MVTec "
            "says (Grad-CAM \"is almost instantaneous\")."]
    if args.write:
        write_section(ROOT / "benchmarks" / "RESULTS.md", CONFIDENCE_HEADING, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
