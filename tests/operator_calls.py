"""Calls of the HALCON operators shared by the reliability tests (threads, memory, corrupt
files, properties, immutability), and what they read back from the result dicts."""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, settings

import dlheatmap as dl
from dlheatmap.spec import load_spec

SPEC = load_spec()
HEATMAP = "gen_dl_model_heatmap"
# 40 examples keep CI short; DLHEATMAP_HYPOTHESIS_EXAMPLES=1000 searches harder locally.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("DLHEATMAP_HYPOTHESIS_EXAMPLES", "40")), deadline=None,
    database=None, suppress_health_check=[HealthCheck.too_slow])

# Heatmap calls (method, TargetClasses, GenParam) and apply_dl_model, as the threads and the
# memory tests mix them.
VARIANTS = (
    ("grad_cam", [], None),
    ("grad_cam", [2], {"scaling": "none"}),
    ("grad_cam", [], {"use_conv_only": "false", "scaling": "scale_before_relu"}),
    ("grad_cam", [1], {"target_conv_layer": "/4/Conv"}),
    ("guided_grad_cam", [1], None),
    ("apply",),
)


def documented(operator: str) -> set[int]:
    """The codes spec/operators.toml documents for ``operator``."""
    return {rule["code"] for rule in SPEC.rules if rule["operator"] == operator}


def heatmap_of(result: dict, method: str = "grad_cam") -> tuple[int, np.ndarray]:
    """(class ID, heatmap) of one gen_dl_model_heatmap result dict."""
    key = "heatmap_grad_cam" if method == "grad_cam" else "heatmap_guided_grad_cam"
    ((name, image),) = result[key].items()
    return int(name.rsplit("_", 1)[1]), image


def call_variant(handle: dl.Model, variant: tuple, samples: list[dict]) -> list[dict]:
    """Run one of :data:`VARIANTS` on ``samples``."""
    if variant[0] == "apply":
        return dl.apply_dl_model(handle, samples, [])
    method, target, gen_param = variant
    return dl.gen_dl_model_heatmap(handle, samples, method, target, gen_param)


def image_pairs(count: int) -> list[list[dict]]:
    """Inputs of two samples each: a call covers a real batch."""
    rng = np.random.default_rng(11)
    images = [rng.standard_normal((32, 32, 3)).astype(np.float32) for _ in range(count)]
    return [[{"image": images[i]}, {"image": images[(i + 1) % count]}] for i in range(count)]


def flatten(results: list[dict]) -> list[tuple[str, np.ndarray]]:
    """Every value of a result list as (key, array), in a fixed order."""
    items = []
    for index, result in enumerate(results):
        for key, value in sorted(result.items()):
            values = value.items() if isinstance(value, dict) else [("", value)]
            items += [(f"{index}.{key}.{sub}", np.asarray(item)) for sub, item in values]
    return items
