"""``report.html``: a self-contained page to browse a job's results.

The page is ``report.html`` beside this module with the job's rows embedded as JSON: a gallery
of the pictures (class, confidence, target class), sortable by confidence and filterable by
class and by error, the picture at full size with its results row on click, and a summary per
class (images, mean confidence). It loads nothing from the network; the pictures are the PNG
files beside it in the output folder.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from dlheatmap.jobs.config import JobConfig
from dlheatmap.jobs.store import json_record, write_atomically

TEMPLATE = Path(__file__).with_name("report.html")


def write_report(results: Path, target: Path, config: JobConfig) -> Path:
    """Write the report of the consolidated ``results`` (Parquet) to ``target``."""
    import pyarrow.parquet as pq

    rows = [json_record(row) for row in pq.read_table(results).to_pylist()]
    # "</" would end the script element that holds the rows
    data = json.dumps(rows).replace("</", "<\\/")
    title = html.escape(f"{config.method} on {Path(config.model).name}")
    page = TEMPLATE.read_text(encoding="utf-8").replace("__TITLE__", title)
    write_atomically(target, page.replace("__ROWS__", data).encode("utf-8"))
    return target
