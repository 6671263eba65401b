"""A job's images: files and folders, glob patterns, manifests (text, CSV or Parquet).

Every source yields paths; the job takes their union in the order given, each path once, and
names each image's picture (:func:`work_items`) before any work starts, so that every engine
and every rerun gives an image the same picture file.
"""

from __future__ import annotations

import glob as globbing
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from dlheatmap.jobs.config import JobError
from dlheatmap.jobs.worker import WorkItem

MANIFEST_COLUMN = "path"


def collect_images(paths: Sequence[str | os.PathLike] = (), recursive: bool = False,
                   globs: Sequence[str] = (), manifests: Sequence[str | os.PathLike] = (),
                   column: str = MANIFEST_COLUMN) -> list[str]:
    """The job's image files, in the order of the sources, without repeats.

    Parameters
    ----------
    paths : sequence of path-like
        Image files (taken whatever their suffix) and folders (their image files, sorted).
    recursive : bool
        Also take the image files in sub-folders of ``paths``' folders.
    globs : sequence of str
        Glob patterns (``**`` matches folders at any depth), matches sorted.
    manifests : sequence of path-like
        A ``.parquet`` or ``.csv`` file with a ``column`` of paths, or a text file with one
        path per line (blank lines and ``#`` comments skipped). Relative paths are taken
        from the manifest's folder.
    column : str
        The column of paths in Parquet and CSV manifests.

    Raises
    ------
    JobError
        A named file or folder is missing, a manifest cannot be read, or nothing is found.
    """
    from dlheatmap.imaging import find_images

    found: list[str] = []
    try:
        found.extend(map(os.fspath, find_images(paths, recursive)))
    except FileNotFoundError as exc:
        raise JobError(f"no such file or folder: {exc}") from None
    for pattern in globs:
        found.extend(sorted(name for name in globbing.glob(pattern, recursive=True)
                            if Path(name).is_file()))
    for manifest in manifests:
        found.extend(_manifest_paths(Path(manifest), column))
    if not found:
        sources = [*map(str, paths), *globs, *map(str, manifests)]
        raise JobError("no image files found in " + ", ".join(sources))
    return list(dict.fromkeys(found))


def _manifest_paths(manifest: Path, column: str) -> list[str]:
    try:
        entries = _manifest_entries(manifest, column)
    except (OSError, ValueError, KeyError) as exc:
        raise JobError(f"--manifest: cannot read {manifest}: {exc}") from None
    base = manifest.parent
    return [os.fspath(base / entry) if not os.path.isabs(entry) else entry
            for entry in entries]


def _manifest_entries(manifest: Path, column: str) -> list[str]:
    suffix = manifest.suffix.lower()
    if suffix in (".parquet", ".csv"):
        table = _table(manifest, suffix)
        if column not in table.column_names:
            raise KeyError(f"no column {column!r} (columns: {', '.join(table.column_names)});"
                           " name it with --column")
        return [str(value) for value in table.column(column).to_pylist() if value]
    lines = manifest.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _table(manifest: Path, suffix: str):
    try:
        import pyarrow.csv as csv
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("Parquet and CSV manifests need pyarrow "
                         "(pip install pyarrow)") from None
    if suffix == ".parquet":
        return pq.read_table(manifest)
    return csv.read_csv(manifest)


def work_items(images: Iterable[str], method: str) -> list[WorkItem]:
    """The images with the names of their pictures: ``<stem>_<method>.png``, and ``-2``,
    ``-3``, ... for later images of the same stem."""
    used: set[str] = set()
    items = []
    for index, image in enumerate(images):
        stem = f"{Path(image).stem}_{method}"
        name, counter = stem, 1
        while name in used:
            counter += 1
            name = f"{stem}-{counter}"
        used.add(name)
        items.append(WorkItem(index, image, f"{name}.png"))
    return items
