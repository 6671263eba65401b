"""A job's output folder: its settings, its result parts, the consolidated results.

Layout of ``OUTPUT/``::

    job.json                 the job's settings; marks the folder as a job's
    parts/part-*.parquet     one file per processed batch, written under a temporary name and
                             renamed: a part on disk is complete
    results.parquet          one row per image, consolidated from the parts at the end
    results.jsonl            the same rows as JSON lines (the single-machine default)
    report.html              the gallery (dlheatmap.jobs.report)
    <image>_<method>.png     the pictures

Each result is written once: a batch's part is named after the images it holds, so a batch
that Ray runs again after a worker died replaces its own part instead of adding rows, and the
consolidation keeps one row per image whatever happened.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dlheatmap.jobs.config import JobConfig, JobError

JOB_FILE = "job.json"
PARTS = "parts"
RESULTS = "results.parquet"


def _point():
    import pyarrow as pa

    return pa.struct([("x", pa.float64()), ("y", pa.float64())])


def schema():
    """The Parquet schema of a results row (error rows leave the result columns null)."""
    import pyarrow as pa

    top = pa.struct([("class_id", pa.int64()), ("class_name", pa.string()),
                     ("confidence", pa.float64())])
    stats = pa.struct([("max", pa.float64()), ("mean", pa.float64()),
                       ("area_above_half", pa.float64()), ("peak", _point()),
                       ("centroid", _point())])
    return pa.schema([
        ("index", pa.int64()), ("image", pa.string()), ("overlay", pa.string()),
        ("method", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
        ("class_id", pa.int64()), ("class_name", pa.string()), ("confidence", pa.float64()),
        ("target_class", pa.int64()), ("top_classes", pa.list_(top)), ("heatmap", stats),
        ("error", pa.string()), ("error_code", pa.int64()), ("seconds", pa.float64()),
    ])


def json_record(row: dict) -> dict:
    """A results row as a results.jsonl object: the columns that hold a value."""
    return {key: value for key, value in row.items() if value is not None}


class JobStore:
    """The output folder of one job.

    Parameters
    ----------
    out_dir : path-like
        The folder; created if missing.
    config : JobConfig
        The job's settings, kept in ``job.json``.
    resume : bool
        Continue the job already in the folder (same settings), skipping its finished images.
    overwrite : bool
        Replace the job already in the folder (its results and pictures are deleted).

    Raises
    ------
    JobError
        The folder cannot be created, holds a job and neither ``resume`` nor ``overwrite``
        is given, or holds a job with other settings on ``resume``.
    """

    def __init__(self, out_dir: str | os.PathLike, config: JobConfig, resume: bool = False,
                 overwrite: bool = False):
        self.out_dir = Path(out_dir)
        self.parts = self.out_dir / PARTS
        self.config = config
        make_folder(self.out_dir, "output folder")
        previous = self._previous_config()
        if previous is not None and not resume and not overwrite:
            raise JobError(f"{self.out_dir} holds the results of a job: --resume continues "
                           "it, --overwrite replaces it, or choose another --output")
        if previous is not None and resume and previous != config.to_dict():
            changed = sorted(key for key, value in config.to_dict().items()
                             if previous.get(key) != value)
            raise JobError(f"--resume: {self.out_dir} holds a job with other settings "
                           f"({', '.join(changed)}); use the same options or --overwrite")
        if previous is not None and overwrite:
            self._delete_previous()
        make_folder(self.parts, "output folder")
        write_atomically(self.out_dir / JOB_FILE,
                         json.dumps(config.to_dict(), indent=2).encode())

    def _previous_config(self) -> dict | None:
        path = self.out_dir / JOB_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise JobError(f"{path} cannot be read ({exc}); remove it or choose another "
                           "--output") from None

    def _delete_previous(self) -> None:
        for row in self.rows():
            if row.get("overlay"):
                Path(row["overlay"]).unlink(missing_ok=True)
        shutil.rmtree(self.parts, ignore_errors=True)
        for name in (RESULTS, "report.html", JOB_FILE):
            (self.out_dir / name).unlink(missing_ok=True)

    def abandon_if_empty(self) -> None:
        """Forget the job when it wrote no result: the folder is free for the next one."""
        if not self.part_files():
            (self.out_dir / JOB_FILE).unlink(missing_ok=True)

    # --- parts ---------------------------------------------------------------------------

    def part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet")) if self.parts.is_dir() else []

    def write_part(self, rows: list[dict]) -> Path:
        """One batch's rows as a part file (see :func:`write_part`)."""
        return write_part(self.out_dir, rows)

    def rows(self) -> Iterator[dict]:
        """Every row of the parts on disk (one part in memory at a time)."""
        import pyarrow.parquet as pq

        for path in self.part_files():
            yield from pq.read_table(path, schema=schema()).to_pylist()

    def finished(self) -> set[str]:
        """Images with a complete result: a row in a part and, unless it is an error row,
        its picture on disk. Parts whose rows are not all complete are rewritten without
        the incomplete rows, so that redoing them adds no second row."""
        import pyarrow.parquet as pq

        done: set[str] = set()
        for path in self.part_files():
            rows = pq.read_table(path, schema=schema()).to_pylist()
            complete = [row for row in rows
                        if row["error"] is not None or Path(row["overlay"] or "").is_file()]
            if len(complete) < len(rows):
                path.unlink()
                if complete:
                    self.write_part(complete)
            done.update(row["image"] for row in complete)
        return done

    # --- the results ---------------------------------------------------------------------

    def consolidate(self, jsonl: Path) -> tuple[int, int]:
        """Write results.parquet and ``jsonl`` from the parts: one row per image, in the
        order of the parts. Returns the number of rows and of error rows."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        target = self.out_dir / RESULTS
        temporary = target.with_name(f".{RESULTS}.{os.getpid()}.tmp")
        seen: set[str] = set()
        errors = 0
        with pq.ParquetWriter(temporary, schema()) as writer, \
                _atomic_text(jsonl) as lines:
            for path in self.part_files():
                rows = [row for row in pq.read_table(path, schema=schema()).to_pylist()
                        if row["image"] not in seen]
                rows.sort(key=lambda row: row["index"])
                seen.update(row["image"] for row in rows)
                errors += sum(row["error"] is not None for row in rows)
                writer.write_table(pa.Table.from_pylist(rows, schema=schema()))
                lines.writelines(json.dumps(json_record(row)) + "\n" for row in rows)
        os.replace(temporary, target)
        return len(seen), errors


def write_part(out_dir: Path, rows: list[dict]) -> Path:
    """One batch's rows as ``parts/part-*.parquet`` in ``out_dir``, named after the images it
    holds, written under a temporary name and renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(out_dir) / PARTS / part_name(row["index"] for row in rows)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema()), temporary)
    os.replace(temporary, path)
    return path


def part_name(indices: Iterable[int]) -> str:
    """A part's file name from the images it holds: the same batch gets the same name."""
    ordered = sorted(indices)
    digest = hashlib.sha1(",".join(map(str, ordered)).encode()).hexdigest()[:12]
    return f"part-{ordered[0]:010d}-{digest}.parquet"


class _atomic_text:  # noqa: N801 -- used as a context manager, like open()
    """A text file written under a temporary name and renamed when the block ends well."""

    def __init__(self, path: Path):
        self.path = path
        self.temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def __enter__(self):
        self.stream = open(self.temporary, "w", encoding="utf-8")
        return self.stream

    def __exit__(self, kind, value, traceback) -> None:
        self.stream.close()
        if kind is None:
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` under a temporary name and rename it onto ``path``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def make_folder(folder: Path, what: str) -> None:
    """Create ``folder`` (and its parents); a failure is a :class:`JobError`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JobError(f"cannot create {what} {folder}: {exc.strerror or exc}") from None


def open_jsonl(path: Path, append: bool) -> Any:
    """The results.jsonl file opened for the rows as they come (checked before any work)."""
    if path.is_dir():
        raise JobError(f"--results: {path} is a folder; give a file name")
    make_folder(path.parent, "results folder")
    try:
        return open(path, "a" if append else "w", encoding="utf-8")
    except OSError as exc:
        raise JobError(f"--results: cannot write {path}: {exc.strerror or exc}") from None
