"""Heatmap jobs: images/s of the in-process engine and of Ray with 1 and 2 actors.

Run with ``.venv/bin/python benchmarks/bench_jobs.py [--write]`` (needs ``dlheatmap[ray]``).
Each engine runs the same grad_cam job (PNG files 256 x 256 read, preprocessed to 224 x 224,
heatmap, overlay PNG, results); the steady throughput is taken from the times the batches'
Parquet parts were written, after each actor's first batch, free of the fixed costs (model
loading, Ray's planning and actor start), which are reported apart.
Ray's overhead per image is its time per image minus the in-process engine's, with the same
CPUs (one actor holding both cores). ``--write`` records the run in benchmarks/RESULTS.md
(section "Heatmap jobs").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_heatmap import JOBS_SECTION, export  # noqa: E402
from benchmarks.machine import describe_machine  # noqa: E402

ENGINES = {  # label: run_job options
    "in-process": {"engine": "local"},
    "Ray, 1 actor x 2 CPUs": {"engine": "ray", "actors": 1, "cpus_per_actor": 2},
    "Ray, 1 actor x 1 CPU": {"engine": "ray", "actors": 1, "cpus_per_actor": 1},
    "Ray, 2 actors x 1 CPU": {"engine": "ray", "actors": 2, "cpus_per_actor": 1},
}


def write_images(folder: Path, count: int) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"part{index:04d}.png"
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def measure(model: Path, images: list[str], out: Path, batch: int, options: dict) -> dict:
    """Steady images/s of one job, from the times its batches' parts were written: the
    rows of the parts after each actor's first (which carries the model's warm-up) over
    the time from the last of those first parts to the last part. ``fixed_s`` is the rest of
    the job's time (model loading, Ray's planning and actor start, consolidation, report)."""
    import pyarrow.parquet as pq

    from dlheatmap.jobs import JobConfig, run_job

    start = time.perf_counter()
    summary = run_job(JobConfig(model=str(model), batch_size=batch), images, out, **options)
    total = time.perf_counter() - start
    assert summary.failed == 0 and summary.images == len(images)
    parts = sorted((out / "parts").glob("part-*.parquet"), key=lambda p: p.stat().st_mtime)
    first = options.get("actors", 1)
    steady_rows = sum(pq.read_metadata(path).num_rows for path in parts[first:])
    steady_s = parts[-1].stat().st_mtime - parts[first - 1].stat().st_mtime
    per_image = steady_s / steady_rows
    return {"images_per_s": 1 / per_image, "ms_per_image": 1000 * per_image,
            "fixed_s": total - len(images) * per_image}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images of a job")
    parser.add_argument("--batch", type=int, default=8, help="model batch size")
    parser.add_argument("--models", nargs="+", default=["resnet50", "mobilenet_v3_large"])
    parser.add_argument("--write", action="store_true", help="record in benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    import ray

    from dlheatmap.jobs.ray_engine import worker_env

    machine = describe_machine()
    print(machine, flush=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env=worker_env())
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = write_images(folder / "images", args.images)
        for name in args.models:
            model = export(name, 224, folder)
            for label, options in ENGINES.items():
                result = measure(model, images, folder / f"{name}-{len(rows)}", args.batch,
                                 options)
                rows.append({"model": name, "engine": label, **result})
                print(f"  {name:20s} {label:24s} {result['images_per_s']:6.2f} images/s "
                      f"({result['ms_per_image']:6.1f} ms/image, fixed {result['fixed_s']:.1f}"
                      " s)", flush=True)
    ray.shutdown()
    text = "\n".join(report(rows, args))
    print("\n" + text)
    if args.write:
        record(text, machine)
    return 0


def report(rows: list[dict], args: argparse.Namespace) -> list[str]:
    lines = [f"grad_cam jobs of {args.images} PNG images (256 x 256 RGB, model input "
             f"224 x 224), batch size {args.batch}, random weights, CPU; steady rate from the "
             "times the batches' parts were written, after each actor's first batch; fixed: "
             "the rest of the job's time (model loading, Ray's planning and actor start, "
             "consolidation, report).", "",
             "| model | engine | images/s | ms/image | fixed s | Ray overhead ms/image |",
             "|---|---|---|---|---|---|"]
    local = {row["model"]: row["ms_per_image"] for row in rows if row["engine"] == "in-process"}
    for row in rows:
        overhead = ("" if row["engine"] == "in-process"
                    else f"{row['ms_per_image'] - local[row['model']]:.1f}")
        lines.append(f"| {row['model']} | {row['engine']} | {row['images_per_s']:.2f} | "
                     f"{row['ms_per_image']:.1f} | {row['fixed_s']:.1f} | {overhead} |")
    return lines


def record(text: str, machine: str) -> None:
    """Replace (or add) the jobs section of RESULTS.md, leaving the rest as it is."""
    path = ROOT / "benchmarks" / "RESULTS.md"
    current = path.read_text()
    kept = current.split(JOBS_SECTION)[0].rstrip()
    section = [JOBS_SECTION, "", "Recorded by `benchmarks/bench_jobs.py --write`.", "",
               f"Machine: {machine}", "", text]
    path.write_text(kept + "\n\n" + "\n".join(section) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
