"""Memory: resident memory and Python allocations stay flat over many calls, handles are freed
and a handle's cache stays within its bound."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tracemalloc
import weakref
from pathlib import Path

import onnxruntime as ort
import psutil
import pytest
import torch

import dlheatmap as dl
from tests.operator_calls import VARIANTS, call_variant, image_pairs


def _hook_counts(handle: dl.Model) -> tuple[int, ...]:
    """Hooks on the cached torch modules and torch's global module hooks."""
    from torch.nn.modules import module as torch_module

    local = 0
    for entry in list(handle._cache.values()):
        root = getattr(entry, "module", entry)
        if isinstance(root, torch.nn.Module):
            for sub in root.modules():
                local += (len(sub._forward_hooks) + len(sub._forward_pre_hooks)
                          + len(sub._backward_hooks) + len(sub._backward_pre_hooks))
    global_hooks = tuple(len(getattr(torch_module, name)) for name in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
        "_global_backward_pre_hooks"))
    return (local, *global_hooks)


def _sessions() -> int:
    # type() rather than isinstance(): the latter touches __class__ of every object, which
    # makes some deprecated torch objects warn.
    return sum(type(obj) is ort.InferenceSession for obj in gc.get_objects())


def _heatmap_calls(handle: dl.Model, inputs: list[list[dict]], count: int, start: int) -> None:
    """One-sample calls: Grad-CAM with three option sets, Guided Grad-CAM every 25th call."""
    for call in range(start, start + count):
        variant = VARIANTS[4] if call % 25 == 0 else VARIANTS[call % 3]
        call_variant(handle, variant, inputs[call % len(inputs)][:1])


_CHILD = "DLHEATMAP_MEMORY_TEST_CHILD"


@pytest.mark.slow
def test_memory_is_flat_from_200_to_2000_heatmap_calls(tiny_path):
    """Measured in a fresh process: earlier tests' allocations would blur the baseline."""
    if os.environ.get(_CHILD) != "1":
        test = f"{__file__}::test_memory_is_flat_from_200_to_2000_heatmap_calls"
        done = subprocess.run(
            [sys.executable, "-m", "pytest", test, "-q", "-s", "-p", "no:cacheprovider"],
            env={**os.environ, _CHILD: "1"}, capture_output=True, text=True, timeout=900,
            cwd=Path(__file__).parents[1])
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert "1 passed" in done.stdout
        return
    handle = dl.read_dl_model(tiny_path)
    inputs = image_pairs(4)
    process = psutil.Process()
    _heatmap_calls(handle, inputs, 100, 0)  # warm-up: sessions, torch modules, allocator pools
    gc.collect()
    _heatmap_calls(handle, inputs, 200, 100)
    gc.collect()
    rss_200 = process.memory_info().rss
    keys_200, hooks_200, sessions_200 = list(handle._cache), _hook_counts(handle), _sessions()
    _heatmap_calls(handle, inputs, 1800, 300)
    gc.collect()
    rss_2000 = process.memory_info().rss
    print(f"RSS after 200 calls {rss_200 / 2**20:.1f} MiB, after 2000 {rss_2000 / 2**20:.1f} "
          f"MiB ({rss_2000 / rss_200 - 1:+.2%})")
    assert rss_2000 <= rss_200 * 1.05
    assert rss_2000 - rss_200 < 32 * 2**20  # under 18 KiB per call, whatever the baseline
    assert set(handle._cache) == set(keys_200)  # nothing new was cached or rebuilt
    assert _hook_counts(handle) == hooks_200
    assert _sessions() == sessions_200


def test_python_allocations_do_not_grow_per_call(tiny_path):
    """tracemalloc sees numpy buffers too: a kept 32 x 32 heatmap per call would add 4 KiB,
    1.2 MiB over 300 calls; the bound allows under 900 bytes per call."""
    handle = dl.read_dl_model(tiny_path)
    inputs = image_pairs(4)
    _heatmap_calls(handle, inputs, 60, 0)
    gc.collect()
    tracemalloc.start()
    try:
        _heatmap_calls(handle, inputs, 40, 60)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        _heatmap_calls(handle, inputs, 300, 100)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    print(f"tracemalloc: {after - before} bytes more after 300 calls")
    assert after - before < 256 * 1024, f"{after - before} bytes kept by 300 calls"


def test_handles_are_freed_and_caches_stay_bounded(tiny_path):
    """No global registry keeps handles alive; a handle's cache never exceeds its bound even
    when every layer, method and option is used."""
    refs = []
    for _ in range(5):
        handle = dl.read_dl_model(tiny_path)
        dl.gen_dl_model_heatmap(handle, image_pairs(1)[0], "grad_cam", [], None)
        refs.append(weakref.ref(handle))
        if len(refs) % 2:
            dl.clear_dl_model(handle)
        del handle
    gc.collect()
    assert all(ref() is None for ref in refs)

    handle = dl.read_dl_model(tiny_path)
    sizes = []
    for layer in ("/0/Conv", "/4/Conv", "/7/Conv"):
        for options in ({"use_conv_only": "true"}, {"use_conv_only": "false"}):
            call_variant(handle, ("grad_cam", [], {"target_conv_layer": layer, **options}),
                         image_pairs(1)[0])
            sizes.append(len(handle._cache))
        call_variant(handle, ("guided_grad_cam", [], {"target_conv_layer": layer}),
                     image_pairs(1)[0])
        sizes.append(len(handle._cache))
    call_variant(handle, VARIANTS[5], image_pairs(1)[0])
    sizes.append(len(handle._cache))
    from dlheatmap.model import _CACHE_SIZE

    assert max(sizes) <= _CACHE_SIZE
    assert sizes[-1] >= 10  # the cache was really exercised


