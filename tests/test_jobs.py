"""Heatmap jobs (dlheatmap.jobs): sources, results files, resume, error rows, both engines.

Truth: ``models.identity_cam_cnn`` with the grey range 0..1 classifies a uniform image of
byte value v as class 0 with probability ``sigmoid(2 v / 255)`` (logits +-mean, see
tests/models.py), so every confidence a job writes is known from the file alone, whichever
engine computed it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlheatmap import cli
from dlheatmap.jobs import JobConfig, JobError, collect_images, run_job
from tests import models

SIZE = 16
OPTIONS = ("--range-min", "0", "--range-max", "1", "--class-names", "bright,dark")
VALUES = (30, 60, 100, 140, 180, 220, 250, 10)  # byte values of the uniform test images


@pytest.fixture(scope="module")
def model_path():
    return models.identity_cam_cnn(SIZE)


def config(model_path, **options) -> JobConfig:
    options = {"range_min": 0.0, "range_max": 1.0, "class_names": ["bright", "dark"],
               "batch_size": 2, **options}
    return JobConfig(model=str(model_path), **options)


def class0_probability(value: int) -> float:
    return float(1 / (1 + np.exp(-2 * value / 255)))


def write_images(folder: Path, values=VALUES) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, value in enumerate(values):
        path = folder / f"img{index:02d}.png"
        Image.fromarray(np.full((32, 48), value, np.uint8)).save(path)
        paths.append(os.fspath(path))
    return paths


def read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def check_rows(rows: list[dict], paths: list[str], values=VALUES) -> None:
    """One row per image, each with the confidence the closed form gives."""
    assert sorted(row["image"] for row in rows) == sorted(paths)
    by_path = {row["image"]: row for row in rows}
    for path, value in zip(paths, values, strict=True):
        row = by_path[path]
        assert row["error"] is None and row["class_id"] == 0 and row["class_name"] == "bright"
        assert row["confidence"] == pytest.approx(class0_probability(value), rel=1e-5)
        assert Path(row["overlay"]).is_file()


# --- sources ---------------------------------------------------------------------------------

def test_sources_folders_globs_and_manifests_in_order_without_repeats(tmp_path):
    import pyarrow as pa
    import pyarrow.csv as csv
    import pyarrow.parquet as pq

    paths = write_images(tmp_path / "a" / "deep", VALUES[:4])
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "list.txt").write_text("# lot 7\n\na/deep/img00.png\n" + paths[1] + "\n")
    pq.write_table(pa.table({"file": [paths[2], "a/deep/img03.png"]}), tmp_path / "m.parquet")
    csv.write_csv(pa.table({"path": [paths[3]]}), tmp_path / "m.csv")

    assert collect_images([tmp_path / "a"], recursive=True) == paths
    assert collect_images(globs=[f"{tmp_path}/**/img0[13].png"]) == [paths[1], paths[3]]
    assert collect_images(manifests=[tmp_path / "list.txt"]) == [
        os.fspath(tmp_path / "a/deep/img00.png"), paths[1]]
    assert collect_images(manifests=[tmp_path / "m.parquet"], column="file") == paths[2:]
    assert collect_images([paths[3]], manifests=[tmp_path / "m.csv"]) == [paths[3]]
    with pytest.raises(JobError, match="column 'path'"):
        collect_images(manifests=[tmp_path / "m.parquet"])
    with pytest.raises(JobError, match="no image files"):
        collect_images(globs=[f"{tmp_path}/*.jpeg"])
    with pytest.raises(JobError, match="no image files"):
        collect_images([tmp_path / "a"])  # its images are in a sub-folder


# --- one machine -----------------------------------------------------------------------------

def test_local_job_writes_parquet_jsonl_and_a_report(tmp_path, model_path):
    paths = write_images(tmp_path / "images")
    summary = run_job(config(model_path), paths, tmp_path / "out")
    rows = read_parquet(summary.results)
    check_rows(rows, paths)
    assert [row["index"] for row in rows] == list(range(len(paths)))  # input order
    lines = [json.loads(line) for line in summary.jsonl.read_text().splitlines()]
    assert [line["image"] for line in lines] == paths
    assert lines[0]["confidence"] == rows[0]["confidence"] and "error" not in lines[0]
    assert summary.images == len(paths) and summary.failed == 0 and summary.skipped == 0
    assert len(list((tmp_path / "out" / "parts").glob("part-*.parquet"))) == len(paths) // 2
    assert "<script" in summary.report.read_text() and "http" not in summary.report.read_text()


def test_unreadable_truncated_and_wrongly_sized_images_give_error_rows(tmp_path, model_path):
    import tifffile

    paths = write_images(tmp_path / "images", VALUES[:2])
    good = Path(paths[0]).read_bytes()
    broken = {"text.png": (b"not an image", 5234), "truncated.png": (good[: len(good) // 2], 5234)}
    for name, (data, _) in broken.items():
        (tmp_path / "images" / name).write_bytes(data)
    with pytest.warns(UserWarning, match="zero-size"):  # such files exist; tifffile warns
        tifffile.imwrite(tmp_path / "images" / "empty.tif", np.zeros((0, 48), np.uint8))
    tifffile.imwrite(tmp_path / "images" / "five.tif", np.full((32, 48, 5), 9, np.uint8),
                     photometric="minisblack", planarconfig="contig")
    expected = {**{name: code for name, (_, code) in broken.items()},
                "empty.tif": 5234, "five.tif": 1301}  # no pixels; 5 channels for 1
    images = collect_images([tmp_path / "images"])
    summary = run_job(config(model_path), images, tmp_path / "out")
    rows = {Path(row["image"]).name: row for row in read_parquet(summary.results)}
    assert {name: rows[name]["error_code"] for name in expected} == expected
    assert all(rows[name]["overlay"] is None for name in expected)
    check_rows([rows["img00.png"], rows["img01.png"]], paths, VALUES[:2])
    assert summary.failed == len(expected)


def test_resume_does_only_what_is_missing_and_keeps_one_row_per_image(tmp_path, model_path):
    """A crash is simulated by deleting one batch's part and one finished picture: --resume
    redoes exactly those three images and the results hold each image once."""
    paths = write_images(tmp_path / "images")
    out = tmp_path / "out"
    run_job(config(model_path), paths, out)
    parts = sorted((out / "parts").glob("part-*.parquet"))
    parts[1].unlink()  # images 2 and 3: as if the job died before this batch was written
    lost = read_parquet(parts[2])[0]
    Path(lost["overlay"]).unlink()  # a picture gone: its row is not complete any more
    calls = []
    from dlheatmap.jobs import engine

    original = engine.ENGINES["local"]

    def counting(config_, store, items, on_rows, **kwargs):
        calls.extend(item.image for item in items)
        original(config_, store, items, on_rows, **kwargs)

    engine.ENGINES["local"] = counting
    try:
        summary = run_job(config(model_path), paths, out, resume=True)
    finally:
        engine.ENGINES["local"] = original
    assert sorted(calls) == sorted([paths[2], paths[3], lost["image"]])
    assert summary.skipped == len(paths) - 3
    check_rows(read_parquet(summary.results), paths)
    lines = summary.jsonl.read_text().splitlines()
    assert sorted(json.loads(line)["image"] for line in lines) == sorted(paths)


def test_output_folders_are_never_overwritten_silently(tmp_path, model_path, capsys):
    paths = write_images(tmp_path / "images", VALUES[:2])
    out = tmp_path / "out"
    base = [model_path, *paths, "-o", out, *OPTIONS, "-q"]
    assert cli.main([str(a) for a in base]) == cli.EXIT_OK
    picture = out / "img00_grad_cam.png"
    stamp = picture.stat().st_mtime_ns
    assert cli.main([str(a) for a in base]) == cli.EXIT_BAD_INPUT
    assert "--resume" in capsys.readouterr().err and picture.stat().st_mtime_ns == stamp
    # other settings cannot resume: the results would mix two jobs
    changed = [*map(str, base), "--resume", "--color-scheme", "hot"]
    assert cli.main(changed) == cli.EXIT_BAD_INPUT
    assert "color_scheme" in capsys.readouterr().err
    assert cli.main([*map(str, base), "--resume"]) == cli.EXIT_OK
    assert picture.stat().st_mtime_ns == stamp  # nothing was redone
    assert cli.main([*map(str, base), "--overwrite", "--batch-size", "1"]) == cli.EXIT_OK
    assert picture.stat().st_mtime_ns != stamp
    assert len(read_parquet(out / "results.parquet")) == 2


def test_command_reads_a_manifest_and_reports_throughput(tmp_path, model_path, capsys):
    paths = write_images(tmp_path / "images", VALUES[:3])
    (tmp_path / "lot.txt").write_text("\n".join(paths))
    status = cli.main([str(model_path), "--manifest", str(tmp_path / "lot.txt"), "-o",
                       str(tmp_path / "out"), *OPTIONS])
    assert status == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "3 of 3" in out and "images/s" in out and "results.parquet" in out
    check_rows(read_parquet(tmp_path / "out" / "results.parquet"), paths, VALUES[:3])
    with pytest.raises(SystemExit) as info:
        cli.main([str(model_path), "-o", str(tmp_path / "x")])  # no source of images
    assert info.value.code == 2


# --- Ray -------------------------------------------------------------------------------------

def test_ray_job_gives_the_rows_of_the_closed_form(tmp_path, model_path, ray_cluster):
    paths = write_images(tmp_path / "images")
    (tmp_path / "images" / "broken.png").write_bytes(b"not an image")
    images = collect_images([tmp_path / "images"])
    summary = run_job(config(model_path), images, tmp_path / "out", engine="ray", actors=2)
    rows = read_parquet(summary.results)
    (broken,) = [row for row in rows if row["error"] is not None]
    assert broken["error_code"] == 5234 and broken["image"].endswith("broken.png")
    check_rows([row for row in rows if row["error"] is None], paths)
    assert summary.failed == 1 and summary.images == len(paths) + 1


def test_ray_job_refusing_an_option_is_a_job_error(tmp_path, model_path, ray_cluster):
    paths = write_images(tmp_path / "images", VALUES[:2])
    with pytest.raises(JobError, match="7853"):
        run_job(config(model_path, target_class=9), paths, tmp_path / "out", engine="ray")
    assert not (tmp_path / "out" / "job.json").exists()  # the folder is free again


def test_killed_actor_still_gives_exactly_one_row_per_image(tmp_path, model_path, ray_cluster):
    """SIGKILL to the actor process while the job runs: Ray restarts the actor and runs
    its batch again; the results hold every image exactly once."""
    import psutil

    values = [int(v) for v in np.linspace(5, 250, 48)]
    paths = write_images(tmp_path / "images", values)
    out = tmp_path / "out"
    outcome: dict = {}

    def job():
        try:
            outcome["summary"] = run_job(config(model_path, batch_size=1), paths, out,
                                         engine="ray", actors=1)
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        done = len(list((out / "parts").glob("part-*.parquet"))) if out.is_dir() else 0
        actors = [p for p in psutil.process_iter(["cmdline"])
                  if "HeatmapActor" in " ".join(p.info["cmdline"] or [])]
        if done >= 2 and actors:
            actors[0].send_signal(signal.SIGKILL)
            killed = (actors[0].pid, done)
        time.sleep(0.05)
    thread.join(timeout=240)
    assert killed is not None, "the job ended before an actor could be killed"
    assert "error" not in outcome, outcome.get("error")
    assert killed[1] < len(paths)  # killed mid-job
    rows = read_parquet(outcome["summary"].results)
    assert len(rows) == len(paths)
    check_rows(rows, paths, values)


def test_command_on_the_ray_engine(tmp_path, model_path, ray_cluster, capsys):
    paths = write_images(tmp_path / "images", VALUES[:3])
    status = cli.main([str(model_path), *paths, "-o", str(tmp_path / "out"), "--engine", "ray",
                       *OPTIONS, "--batch-size", "2",
                       "--progress"])
    assert status == cli.EXIT_OK
    captured = capsys.readouterr()
    assert "3 of 3" in captured.out and "image/s" in captured.err  # tqdm's rate
    check_rows(read_parquet(tmp_path / "out" / "results.parquet"), paths, VALUES[:3])
