"""Running a job: the in-process engine, the progress bar and the summary.

:func:`run_job` prepares the output folder, skips what a previous run finished (``resume``),
hands the remaining work items to an engine, then consolidates the results and writes the
report. An engine is a function ``(config, store, items, on_rows) -> None`` that processes
the items batch by batch, writes each batch's part and calls ``on_rows`` with its rows;
:data:`ENGINES` holds them by name (``'local'`` here, ``'ray'`` in
:mod:`dlheatmap.jobs.ray_engine`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlheatmap.jobs.config import JobConfig, JobError
from dlheatmap.jobs.sources import work_items
from dlheatmap.jobs.store import RESULTS, JobStore, json_record, open_jsonl
from dlheatmap.jobs.worker import HeatmapWorker, WorkItem

Engine = Callable[..., None]
OnRows = Callable[[list[dict]], None]


@dataclass(frozen=True)
class JobSummary:
    """What a job did: images in the job, done before (resumed), failed; its time and files."""

    images: int
    skipped: int
    failed: int
    seconds: float
    out_dir: Path
    results: Path
    jsonl: Path
    report: Path

    @property
    def processed(self) -> int:
        return self.images - self.skipped

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def chunks(items: list, size: int) -> Iterator[list]:
    """``items`` in consecutive lists of ``size`` (the last one shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_local(config: JobConfig, store: JobStore, items: list[WorkItem], on_rows: OnRows,
              **_: Any) -> None:
    """The in-process engine: one model, batches of the model's batch size in turn."""
    worker = HeatmapWorker(config, store.out_dir)
    for batch in chunks(items, config.batch_size):
        rows = worker.process(batch)
        store.write_part(rows)
        on_rows(rows)


def _ray_engine(*args: Any, **kwargs: Any) -> None:
    from dlheatmap.jobs.ray_engine import run_ray

    run_ray(*args, **kwargs)


ENGINES: dict[str, Engine] = {"local": run_local, "ray": _ray_engine}


def run_job(config: JobConfig, images: list[str], out_dir: str | Path, *, engine: str = "local",
            resume: bool = False, overwrite: bool = False, jsonl: Path | None = None,
            progress: bool = False, on_failure: Callable[[dict], None] | None = None,
            **engine_options: Any) -> JobSummary:
    """Heatmap pictures and result rows for ``images``.

    Parameters
    ----------
    config : JobConfig
        What to compute.
    images : list of str
        The image files (see :func:`dlheatmap.jobs.collect_images`).
    out_dir : path-like
        The output folder (see :mod:`dlheatmap.jobs.store`).
    engine : {'local', 'ray'}
        Where the work runs.
    resume, overwrite : bool
        What to do with a job already in ``out_dir``; without either, such a folder is refused.
    jsonl : path, optional
        The JSON-lines results file (default ``out_dir/results.jsonl``).
    progress : bool
        Show a progress bar (images/s, ETA) on stderr.
    on_failure : callable, optional
        Called with each error row as it comes.
    **engine_options
        Passed to the engine (Ray: ``address``, ``actors``, ``cpus_per_actor``).

    Raises
    ------
    JobError
        Bad model, option or output folder (nothing, or only whole batches, written).
    """
    from dlheatmap.jobs.report import write_report

    if engine not in ENGINES:
        raise JobError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    store = JobStore(out_dir, config, resume=resume, overwrite=overwrite)
    jsonl = jsonl or store.out_dir / "results.jsonl"
    done = store.finished() if resume else set()
    items = [item for item in work_items(images, config.method) if item.image not in done]
    start = time.perf_counter()
    with open_jsonl(jsonl, append=resume) as lines, _progress_bar(len(items), progress) as bar:
        def on_rows(rows: list[dict]) -> None:
            for row in rows:
                if row.get("error") is not None and on_failure is not None:
                    on_failure(row)
                lines.write(json.dumps(json_record(row)) + "\n")
            lines.flush()
            bar.update(len(rows))

        try:
            if items:
                ENGINES[engine](config, store, items, on_rows, **engine_options)
        except JobError:
            store.abandon_if_empty()  # an option refused at the first batch leaves no job
            raise
    seconds = time.perf_counter() - start
    count, failed = store.consolidate(jsonl)
    report = write_report(store.out_dir / RESULTS, store.out_dir / "report.html", config)
    return JobSummary(count, len(images) - len(items), failed, seconds, store.out_dir,
                      store.out_dir / RESULTS, jsonl, report)


def _progress_bar(total: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="image", desc="dlheatmap", file=sys.stderr,
                disable=not show, dynamic_ncols=True, smoothing=0.1)
