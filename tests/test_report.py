"""report.html in a real browser: headless Chromium opens a job's report and the test checks
what a person sees (tiles, sorting, the class and error filters, an opened picture) against
the job's results.parquet; a screenshot is kept in .cache/report-screenshots/.

Chromium comes from Debian's ``chromium`` package (``./run setup`` installs it where it is
missing); the tests skip, saying so, only where no Chromium can be found.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlheatmap.jobs import JobConfig, run_job
from tests import models
from tests.browser import Browser, find_browser

SCREENSHOTS = Path(__file__).resolve().parent.parent / ".cache" / "report-screenshots"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A job of the trained 3-class CNN on its kind of images (a square, a ring or a cross
    on clutter: several classes) and two broken files."""
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("report")
    images, _, _ = models.evidence_images(10, seed=5)
    for index, image in enumerate(images):
        pixels = (image[:, :, 0] * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"part{index:02d}.png")
    (folder / "broken.png").write_bytes(b"no image")
    (folder / "cut.png").write_bytes((folder / "part00.png").read_bytes()[:200])
    images = sorted(str(path) for path in folder.glob("*.png"))
    config = JobConfig(model=str(models.trained_evidence_cnn()), batch_size=4, range_min=0.0,
                       range_max=1.0, class_names=["square", "ring", "cross"])
    summary = run_job(config, images, folder / "out")
    return summary, pq.read_table(summary.results).to_pylist()


@pytest.fixture(scope="module")
def page(job):
    executable = find_browser()
    if executable is None:
        pytest.skip("no Chromium on PATH: install Debian's chromium package "
                    "(apt-get install -y chromium; ./run setup does it)")
    browser = Browser(executable, job[0].report.resolve().as_uri())
    yield browser
    browser.close()


TILES = "[...document.querySelectorAll('#gallery .tile')]"


def shown(page) -> list[dict]:
    return page.evaluate(f"{TILES}.map(t => ({{image: t.dataset.image, "
                         "confidence: t.dataset.confidence, text: t.innerText}))")


def choose(page, select: str, value: str) -> None:
    page.evaluate(f"(() => {{ const s = document.getElementById({json.dumps(select)}); "
                  f"s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')); }})()")


def test_gallery_sorting_and_filters_show_what_the_results_say(page, job):
    _, rows = job
    ok = [row for row in rows if row["error"] is None]
    tiles = shown(page)
    assert len(tiles) == len(rows) == 12
    # default order: confidence, highest first, errors last
    assert [float(t["confidence"]) for t in tiles[: len(ok)]] == sorted(
        (row["confidence"] for row in ok), reverse=True)
    best = max(ok, key=lambda row: row["confidence"])
    assert best["class_name"] in tiles[0]["text"] and f"{best['confidence']:.3f}" in \
        tiles[0]["text"] and "target: top class" in tiles[0]["text"]

    choose(page, "sort", "confidence-asc")
    ascending = shown(page)
    assert [float(t["confidence"]) for t in ascending[: len(ok)]] == sorted(
        row["confidence"] for row in ok)
    assert not any(t["confidence"] for t in ascending[len(ok):])  # errors last both ways

    name = ok[0]["class_name"]
    key = f"{name} ({ok[0]['class_id']})"
    assert len({row["class_name"] for row in ok}) > 1  # the filter has something to hide
    choose(page, "class-filter", key)
    assert sorted(t["image"] for t in shown(page)) == sorted(
        row["image"] for row in ok if row["class_name"] == name)
    choose(page, "class-filter", "")

    choose(page, "error-filter", "error")
    errors = shown(page)
    assert sorted(t["image"] for t in errors) == sorted(
        row["image"] for row in rows if row["error"] is not None)
    assert all("error 5234" in t["text"] for t in errors)
    choose(page, "error-filter", "")
    assert page.evaluate("document.getElementById('count').textContent") == "12 of 12 shown"


def test_per_class_summary_counts_and_mean_confidence(page, job):
    _, rows = job
    table = page.evaluate("[...document.querySelectorAll('#summary tbody tr')]"
                          ".map(r => [...r.cells].map(c => c.textContent))")
    expected = {}
    for row in rows:
        key = "error" if row["error"] else f"{row['class_name']} ({row['class_id']})"
        expected.setdefault(key, []).append(row["confidence"] or 0.0)
    assert {cells[0]: int(cells[1]) for cells in table} == {
        key: len(values) for key, values in expected.items()}
    for key, _, mean in table:
        if key != "error":
            assert float(mean) == pytest.approx(np.mean(expected[key]), abs=5e-4)


def test_clicking_a_tile_opens_the_full_picture_and_its_row(page, job):
    _, rows = job
    choose(page, "sort", "confidence-desc")
    box = page.evaluate("(() => { const r = document.querySelector('#gallery .tile img')"
                        ".getBoundingClientRect(); return [r.x + r.width / 2, "
                        "r.y + r.height / 2]; })()")
    page.click(*box)  # a person's click on the first picture
    opened = page.evaluate(
        "new Promise(done => { const img = document.getElementById('viewer-image'); "
        "const tell = () => done({open: document.getElementById('viewer').open, "
        "width: img.naturalWidth, height: img.naturalHeight, src: img.src, "
        "row: document.getElementById('viewer-row').innerText}); "
        "img.complete ? tell() : img.addEventListener('load', tell); })")
    best = max((row for row in rows if row["error"] is None), key=lambda row: row["confidence"])
    with Image.open(best["overlay"]) as picture:
        assert (opened["width"], opened["height"]) == picture.size  # the full-size overlay
    assert opened["open"] and opened["src"].endswith(Path(best["overlay"]).name)
    assert best["image"] in opened["row"] and "top_classes" in opened["row"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = page.screenshot(SCREENSHOTS / "report-opened.png")
    page.evaluate("document.getElementById('viewer').close()")
    page.screenshot(SCREENSHOTS / "report-gallery.png")
    assert shot.stat().st_size > 10_000
