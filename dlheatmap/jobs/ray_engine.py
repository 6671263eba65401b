"""The Ray engine: a job on Ray Data, images decoded in tasks, heatmaps in an actor pool.

The pipeline is ``from_items(work items)`` -> ``map_batches(decode)`` (Ray tasks read and
decode the files) -> ``map_batches(HeatmapActor, compute=ActorPoolStrategy(size=actors))``
(one model per actor, batches of the model's batch size). Each actor writes its batches'
Parquet parts itself and sends the driver only the rows' JSON for the progress bar and
results.jsonl, so the dataset is streamed, never collected on the driver.

Ray Data restarts an actor that dies and runs its batch again (``max_restarts`` and
``max_task_retries`` default to unlimited for actor pools); the batch's part has the same
name (:func:`dlheatmap.jobs.store.part_name`), so it is replaced, not doubled. Written for
Ray 2.50 and later (``compute=ActorPoolStrategy(...)``; the ``concurrency=`` argument is
deprecated there); tested on 2.60.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dlheatmap.errors import HOperatorError
from dlheatmap.jobs.config import JobConfig, JobError
from dlheatmap.jobs.store import JobStore, write_part
from dlheatmap.jobs.worker import Decoded, HeatmapWorker, WorkItem, decode


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise JobError("--engine ray needs Ray Data: pip install 'dlheatmap[ray]'") from None
    return ray


def package_root() -> str:
    """The folder that holds the dlheatmap package in use (a checkout or site-packages)."""
    import dlheatmap

    return os.fspath(Path(dlheatmap.__file__).resolve().parent.parent)


def worker_env() -> dict[str, Any]:
    """A runtime_env under which Ray workers import this very dlheatmap package."""
    path = os.pathsep.join(filter(None, [package_root(), os.environ.get("PYTHONPATH")]))
    return {"env_vars": {"PYTHONPATH": path}}


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address``, or start a local one; nothing if Ray already runs.

    A local cluster's workers import the driver's dlheatmap (:func:`worker_env`); on a cluster
    joined by address, dlheatmap must be installed on every node.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"address": address, "include_dashboard": False,
                               "log_to_driver": False}
    if address is None:
        options["runtime_env"] = worker_env()
    ray.init(**options)


def decode_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray task: read a batch of image files; the pixels travel as ``.npy`` bytes (images of
    one batch may differ in size and channels), a read error as its text and code."""
    pixels, errors, codes = [], [], []
    for index, image, overlay in zip(batch["index"], batch["image"], batch["overlay"],
                                     strict=True):
        decoded = decode(WorkItem(int(index), str(image), str(overlay)))
        buffer = io.BytesIO()
        if decoded.original is not None:
            np.save(buffer, decoded.original, allow_pickle=False)
        pixels.append(buffer.getvalue())
        error = decoded.error
        # HOperatorError does not pickle; its three parts do
        errors.append("" if error is None else f"{error.operator}\n{error.extended_message}")
        codes.append(-1 if error is None else error.error_code)
    return {**batch, "pixels": np.array(pixels, dtype=object),
            "error": np.array(errors, dtype=object), "error_code": np.array(codes)}


class HeatmapActor:
    """Ray actor: one :class:`HeatmapWorker` (one model), threads sized to its CPUs."""

    def __init__(self, config: JobConfig, out_dir: str, cpus: int):
        _size_threads(cpus)
        self.worker = HeatmapWorker(config, out_dir)
        self.store_dir = Path(out_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decoded = [self._decoded(batch, at) for at in range(len(batch["index"]))]
        try:
            rows = self.worker.process_decoded(decoded)
        except JobError as exc:
            # Ray keeps only the traceback's text of an exception; the driver raises this
            return {"row": np.array([""], dtype=object),
                    "refused": np.array([str(exc)], dtype=object)}
        write_part(self.store_dir, rows)
        return {"row": np.array([json.dumps(row) for row in rows], dtype=object),
                "refused": np.array([""] * len(rows), dtype=object)}

    @staticmethod
    def _decoded(batch: dict[str, np.ndarray], at: int) -> Decoded:
        item = WorkItem(int(batch["index"][at]), str(batch["image"][at]),
                        str(batch["overlay"][at]))
        code = int(batch["error_code"][at])
        if code >= 0:
            operator, _, detail = str(batch["error"][at]).partition("\n")
            return Decoded(item, error=HOperatorError(code, detail, operator))
        return Decoded(item, np.load(io.BytesIO(batch["pixels"][at]), allow_pickle=False))


def _size_threads(cpus: int) -> None:
    """onnxruntime (through OMP_NUM_THREADS, see dlheatmap.runtime) and torch use as many
    threads as the actor has CPUs, so that actors on one node do not oversubscribe it. Torch
    is not imported for that: the onnxruntime engine never needs it, and the torch engine
    reads OMP_NUM_THREADS when it first imports torch."""
    os.environ["OMP_NUM_THREADS"] = str(cpus)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(cpus)


def run_ray(config: JobConfig, store: JobStore, items: list[WorkItem], on_rows,
            *, address: str | None = None, actors: int | None = None, cpus_per_actor: int = 1,
            **_: Any) -> None:
    """The Ray engine (see the module docstring); rows reach ``on_rows`` as batches finish.

    Raises
    ------
    JobError
        Ray is missing, or an actor refused the job's model or options (the first batch
        tells; the job stops there).
    """
    ray = _import_ray()
    connect(address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the job's own bar counts images
    # one GPU per actor where the cluster has GPUs; elsewhere runtime 'gpu' falls back to the
    # CPU in each actor (with dlheatmap's warning) instead of waiting for a GPU forever
    gpu = config.runtime == "gpu" and ray.cluster_resources().get("GPU", 0) >= 1
    size = actors or _default_actors(ray, gpu, cpus_per_actor)
    size = max(1, min(size, -(-len(items) // config.batch_size)))
    dataset = ray.data.from_items(
        [{"index": item.index, "image": item.image, "overlay": item.overlay}
         for item in items])
    # Reading tasks reserve no CPU: they are light and mostly wait for the disk, and a
    # reservation would wait forever once the actors hold every CPU (the pool is sized to
    # the cluster). Other resources than the actors' also keep Ray from fusing the reading
    # into the actors.
    dataset = dataset.map_batches(decode_batch, batch_size=config.batch_size, num_cpus=0)
    dataset = dataset.map_batches(
        HeatmapActor, batch_size=config.batch_size,
        fn_constructor_args=(config, os.fspath(store.out_dir), cpus_per_actor),
        compute=ray.data.ActorPoolStrategy(size=size),
        num_cpus=cpus_per_actor, num_gpus=1 if gpu else 0)
    # closed on every way out, so that a job that stops early (a refusal, an interrupt)
    # shuts its executor down and hands its actors' CPUs back at once
    batches = iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))
    with contextlib.closing(batches):
        for batch in batches:
            refused = [text for text in batch["refused"] if text]
            if refused:
                raise JobError(refused[0])
            on_rows([json.loads(text) for text in batch["row"]])


def _default_actors(ray, gpu: bool, cpus_per_actor: int) -> int:
    resources = ray.cluster_resources()
    if gpu:
        return int(resources["GPU"])
    return max(1, int(resources.get("CPU", 1)) // cpus_per_actor)


