"""Shared fixtures: models are built by tests/models.py (cached on disk), never downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dlheatmap as dl
from tests import models


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    """The tiny CNN (3 x 32 x 32, 4 classes, dynamic batch): built once, cached on disk.

    Every test that needs the tiny model takes it from here (or from :func:`tiny`); a test
    that needs several handles, or one shared by a module, reads them from this path.
    """
    return models.tiny_cnn()


@pytest.fixture
def tiny(tiny_path) -> dl.Model:
    """A fresh handle on the tiny CNN, free to change."""
    return dl.read_dl_model(tiny_path)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def random_images(rng, count: int, height: int, width: int, channels: int) -> np.ndarray:
    return rng.standard_normal((count, height, width, channels)).astype(np.float32)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the whole test session; its workers import this
    checkout's dlheatmap. Skips where Ray is not installed (pip install 'dlheatmap[ray]')."""
    ray = pytest.importorskip("ray", reason="the Ray engine needs pip install 'dlheatmap[ray]'")
    from dlheatmap.jobs.ray_engine import worker_env

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env=worker_env())
    yield ray
    ray.shutdown()
