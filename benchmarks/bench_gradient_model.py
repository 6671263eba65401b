"""The ONNX gradient models alone against plain onnxruntime inference, side by side.

``.venv/bin/python benchmarks/bench_gradient_model.py [--models resnet50 mobilenet_v3_large]``

For each model (torchvision, random weights, 224 x 224, exported with the legacy exporter) and
batch (1 and 8) it times, in one process and interleaved round by round, onnxruntime inference
and one run of each gradient model of :mod:`dlheatmap.graph.backward` (grad_cam and
guided_grad_cam heads at the default target layer, saliency's plain input gradient), and
prints medians and ratios to inference. ``--conv-transpose`` also times the variant that
takes every convolution's input gradient as a ConvTranspose (no flipped weights). This is a
design measurement of the graphs; the product's benchmark is bench_heatmap.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe_machine  # noqa: E402


def _requests(layer: str, conv_transpose: bool) -> dict:
    """label -> (request, flip_stride_one)."""
    from dlheatmap.graph.backward import GradientRequest

    found = {"grad_cam": (GradientRequest(layer, head="grad_cam"), True),
             "guided_grad_cam": (GradientRequest(layer, head="guided_grad_cam"), True),
             "saliency": (GradientRequest(input_gradient="plain"), True)}
    if conv_transpose:
        found["guided_grad_cam (ConvTranspose)"] = (found["guided_grad_cam"][0], False)
        found["saliency (ConvTranspose)"] = (found["saliency"][0], False)
    return found


def _session(model, extended: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if extended:  # no layout optimisations (NCHWc): fewer reorders between the two passes
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def bench(name: str, batches: list[int], rounds: int, conv_transpose: bool,
          extended: bool) -> list[str]:
    import onnx

    import dlheatmap as dl
    from dlheatmap.graph.backward import (
        IMAGE_INPUT,
        SCALING_INPUT,
        TARGETS_INPUT,
        build_gradient_model,
        scaling_input,
    )
    from tests import models

    path = models.torchvision_model(name, 224, num_classes=1000)
    model = dl.read_dl_model(path)
    layer = model.default_target_layer().output
    shapes = model.tensor_shapes()
    plain = _session(onnx.load(str(path)))
    sessions = {}
    for label, (request, flip) in _requests(layer, conv_transpose).items():
        graph = build_gradient_model(model.info, request, shapes, (224, 224), flip_stride_one=flip)
        sessions[label] = (_session(graph), request)
        if extended:
            sessions[f"{label} (no NCHWc)"] = (_session(graph, extended=True), request)
    lines = []
    for batch in batches:
        images = np.random.default_rng(0).uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)
        nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        feeds = {"inference": (plain, {plain.get_inputs()[0].name: nchw})}
        for label, (session, request) in sessions.items():
            feed = {IMAGE_INPUT: images, TARGETS_INPUT: np.full((batch, 1), -1, np.int64)}
            if request.head == "grad_cam":
                feed[SCALING_INPUT] = scaling_input("max")
            feeds[label] = (session, feed)
        times: dict[str, list[float]] = {label: [] for label in feeds}
        for _ in range(2):  # warm-up
            for session, feed in feeds.values():
                session.run(None, feed)
        for _ in range(rounds):
            for label, (session, feed) in feeds.items():
                start = time.perf_counter()
                session.run(None, feed)
                times[label].append(time.perf_counter() - start)
        base = statistics.median(times["inference"])
        for label, values in times.items():
            median = statistics.median(values)
            lines.append(f"| {name} | {batch} | {label} | {median * 1e3:.1f} | "
                         f"{median / base:.2f} |")
            print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "mobilenet_v3_large"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--conv-transpose", action="store_true")
    parser.add_argument("--extended", action="store_true",
                        help="also time the gradient sessions without layout optimisations")
    args = parser.parse_args(argv)
    print(describe_machine())
    print("| model | batch | run | median ms | / inference |")
    print("|---|---|---|---|---|")
    for name in args.models:
        bench(name, args.batches, args.rounds, args.conv_transpose, args.extended)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
