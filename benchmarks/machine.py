"""A one-line description of the machine a benchmark ran on, for its results file."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe_machine() -> str:
    import onnxruntime as ort
    import torch

    cpu = platform.processor() or "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (f"{cpu}; {os.cpu_count()} logical cores; {memory:.0f} GiB RAM; Python "
            f"{platform.python_version()}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); onnxruntime {ort.__version__}; "
            f"load average at the start {load}")


def section(path: Path, heading: str) -> str:
    """The ``heading`` section of a results file (up to the next '## ' heading), or ''."""
    if not path.is_file():
        return ""
    lines = path.read_text(encoding="utf-8").splitlines()
    if heading not in lines:
        return ""
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return "\n".join(lines[start:end]).rstrip() + "\n"


def write_section(path: Path, heading: str, body: list[str]) -> None:
    """Replace (or append) the ``heading`` section of a results file with ``body``."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    current = section(path, heading)
    new = "\n".join([heading, "", *body]).rstrip() + "\n"
    text = old.replace(current, new) if current else old.rstrip() + "\n\n" + new
    path.write_text(text, encoding="utf-8")
