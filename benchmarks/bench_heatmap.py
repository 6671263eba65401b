"""Heatmap speed: dlheatmap against onnxruntime inference, captum and pytorch-grad-cam.

Run with ``./run bench`` (or ``.venv/bin/python benchmarks/bench_heatmap.py``). Everything is
measured side by side in one run on the same machine. Models are exported once with random
weights; then every (model, batch, method) runs in a fresh Python process, so each one's peak
memory is its own: it is warmed up, timed, and reports its median time and the peak resident
memory of the timed calls above the memory before them. ``--write`` records the run in
benchmarks/RESULTS.md.

Peers run on the original torchvision module (what their users have); dlheatmap and the
onnxruntime baseline run on the exported ONNX file.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_confidence import CONFIDENCE_HEADING  # noqa: E402
from benchmarks.machine import describe_machine, section  # noqa: E402

MODELS = {
    # name: target layer as a torchvision module path (the default layer dlheatmap picks)
    "resnet50": "layer4.2.conv3",
    "mobilenet_v3_large": "features.16.0",
}
JOBS_SECTION = "## Heatmap jobs"  # written by benchmarks/bench_jobs.py
METHODS = [
    "onnxruntime inference",
    "dlheatmap grad_cam",
    "dlheatmap guided_grad_cam",
    "dlheatmap saliency",
    "dlheatmap torch-engine grad_cam",
    "dlheatmap torch-engine guided_grad_cam",
    "captum LayerGradCam",
    "captum GuidedGradCam",
    "pytorch-grad-cam GradCAM",
    "pytorch-grad-cam GradCAM x GuidedBackprop",
]


# --- one measurement, in its own process ---------------------------------------------------

def measure(fn: Callable[[], object], repeats: int, warmup: int = 2) -> dict:
    """Median wall time after warm-up, and the peak RSS of the timed calls above the RSS
    before them (what one call needs once sessions and modules exist)."""
    for _ in range(warmup):
        fn()
    gc.collect()
    before = _reset_peak_rss()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return {"ms": statistics.median(times), "mib": max(0.0, _status_mib("VmHWM") - before)}


def _reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (Linux: clear_refs 5); return the current RSS."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_mib("VmRSS")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise LookupError(field)


def _method_call(method: str, model_name: str, path: Path, batch: int, size: int):
    """Everything a method needs set up, then the call to time. Each method imports only what
    it needs, as its users would: dlheatmap imports torch itself, lazily."""
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    target = int(json.loads(path.with_suffix(".json").read_text())["target"])

    if method == "onnxruntime inference":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda: session.run(None, {"image": nchw})
    if method.startswith("dlheatmap"):
        import dlheatmap as dl

        model = dl.read_dl_model(path)
        dl.set_dl_model_param(model, "batch_size", batch)
        samples = [{"image": image} for image in images]
        kind = method.split()[-1]
        if kind == "saliency":  # explain's; normalisation as for its maps
            return lambda: dl.explain(model, images, "saliency", target)
        if "torch-engine" in method:  # the same heatmap, differentiated by onnx2torch + torch
            core = getattr(dl.heatmap, kind)
            fixed = dl.heatmap.fixed_class(target)
            return lambda: core(model, images, fixed, engine="torch")
        return lambda: dl.gen_dl_model_heatmap(model, samples, kind, target, None)

    import torch
    import torchvision

    torch.manual_seed(0)
    module = torchvision.models.get_model(model_name, weights=None).eval()
    module.load_state_dict(torch.load(path.with_suffix(".pt")))
    layer = module.get_submodule(MODELS[model_name])
    x = torch.from_numpy(nchw)
    if method == "captum LayerGradCam":
        from captum.attr import LayerGradCam

        return lambda: LayerGradCam(module, layer).attribute(x, target=target)
    if method == "captum GuidedGradCam":
        from captum.attr import GuidedGradCam

        return lambda: GuidedGradCam(module, layer).attribute(x.clone().requires_grad_(),
                                                              target=target)
    from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(module, [layer])
    targets = [ClassifierOutputTarget(target)] * batch
    if method == "pytorch-grad-cam GradCAM":
        return lambda: cam(x, targets)
    guided = GuidedBackpropReLUModel(module, device="cpu")

    def grad_cam_times_guided():  # the peer's documented recipe, one image at a time
        masks = cam(x, targets)
        return [guided(x[i : i + 1], target) * masks[i][..., None] for i in range(batch)]

    return grad_cam_times_guided


def run_one(args) -> None:
    call = _method_call(args.method, args.model, Path(args.path), args.batch, args.size)
    print(json.dumps(measure(call, args.repeats)))


# --- orchestration ------------------------------------------------------------------------

def export(name: str, size: int, folder: Path) -> Path:
    import onnxruntime as ort
    import torch
    import torchvision

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    module = torchvision.models.get_model(name, weights=None).eval()
    path = folder / f"{name}.onnx"
    torch.save(module.state_dict(), path.with_suffix(".pt"))
    torch.onnx.export(module, (torch.randn(1, 3, size, size),), str(path), dynamo=False,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probe = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    target = int(session.run(None, {"image": probe})[0].argmax())
    path.with_suffix(".json").write_text(json.dumps({"target": target}))
    return path


def subprocess_measure(method: str, model: str, path: Path, batch: int, size: int,
                       repeats: int) -> dict:
    command = [sys.executable, __file__, "--one", method, "--model", model, "--path", str(path),
               "--batch", str(batch), "--size", str(size), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_use_and_growth(folder: Path, size: int, growth_calls: int) -> list[str]:
    """First-use cost (ResNet-50: each method builds its onnxruntime gradient session in a
    fresh process), resident memory after apply + grad_cam + guided_grad_cam against a plain
    onnxruntime session, and memory over repeated calls (MobileNetV3)."""
    resnet = str(folder / "resnet50.onnx")
    first = f"""
import json, sys, time
import numpy as np
sys.path.insert(0, {str(ROOT)!r})
import dlheatmap as dl
model = dl.read_dl_model({resnet!r})
image = [{{"image": np.zeros(({size}, {size}, 3), np.float32)}}]
out = {{}}
for call in ("first", "second"):
    t = time.perf_counter(); dl.gen_dl_model_heatmap(model, image, sys.argv[1], [], None)
    out[call] = (time.perf_counter() - t) * 1000
print(json.dumps(out))
"""
    values: dict[str, float] = {}
    for method in ("grad_cam", "guided_grad_cam"):
        times = _json_from([sys.executable, "-c", first, method])
        for call, ms in times.items():
            values[f"ResNet-50 {method}: {call} call of a fresh process, ms"] = ms
    values["ResNet-50 first guided_grad_cam / first grad_cam (target <= 1.5)"] = (
        values["ResNet-50 guided_grad_cam: first call of a fresh process, ms"]
        / values["ResNet-50 grad_cam: first call of a fresh process, ms"])
    memory = f"""
import json, sys
import numpy as np
sys.path.insert(0, {str(ROOT)!r})
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
image = np.zeros((1, {size}, {size}, 3), np.float32)
if sys.argv[1] == "plain":
    import onnxruntime as ort
    session = ort.InferenceSession({resnet!r}, providers=["CPUExecutionProvider"])
    session.run(None, {{"image": image.transpose(0, 3, 1, 2).copy()}})
else:
    import dlheatmap as dl
    model = dl.read_dl_model({resnet!r})
    samples = [{{"image": image[0]}}]
    dl.apply_dl_model(model, samples, [])
    for method in ("grad_cam", "guided_grad_cam"):
        dl.gen_dl_model_heatmap(model, samples, method, [], None)
print(json.dumps({{"rss": rss()}}))
"""
    plain = _json_from([sys.executable, "-c", memory, "plain"])["rss"]
    ours = _json_from([sys.executable, "-c", memory, "dlheatmap"])["rss"]
    values["ResNet-50 plain onnxruntime session after one inference: RSS, MiB"] = plain
    values["ResNet-50 after apply + grad_cam + guided_grad_cam: RSS, MiB"] = ours
    values["ResNet-50 RSS ratio (target <= 1.6)"] = ours / plain
    growth = f"""
import gc, json, sys
import numpy as np
sys.path.insert(0, {str(ROOT)!r})
import dlheatmap as dl
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
model = dl.read_dl_model({str(folder / "mobilenet_v3_large.onnx")!r})
pixels = np.random.default_rng(1).standard_normal(({size}, {size}, 3))
sample = {{"image": pixels.astype(np.float32)}}
calls = {growth_calls}
out = {{}}
for method in ("grad_cam", "guided_grad_cam"):
    for i in range(calls):
        dl.gen_dl_model_heatmap(model, sample, method, [], None)
        if i + 1 == calls // 10:
            gc.collect(); early = rss()
    gc.collect(); late = rss()
    out[f"MobileNetV3 {{method}}: RSS after {{calls // 10}} calls, MiB"] = early
    out[f"MobileNetV3 {{method}}: RSS after {{calls}} calls, MiB"] = late
    key = f"MobileNetV3 {{method}}: growth from call {{calls // 10}} to {{calls}}, %"
    out[key] = 100 * (late - early) / early
print(json.dumps(out))
"""
    values.update(_json_from([sys.executable, "-c", growth]))
    return [f"- {key}: {value:.2f}" for key, value in values.items()]


def _json_from(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


RATIOS = [
    # (column, dlheatmap method, the other method)
    ("grad_cam / ORT inference (target <= 1.10 ResNet-50, <= 1.15 MobileNetV3)",
     "dlheatmap grad_cam", "onnxruntime inference"),
    ("guided_grad_cam / ORT inference (target <= 2.5 ResNet-50, <= 3.0 MobileNetV3)",
     "dlheatmap guided_grad_cam", "onnxruntime inference"),
    ("saliency / ORT inference (target <= 2.2 ResNet-50)",
     "dlheatmap saliency", "onnxruntime inference"),
    ("torch engine: grad_cam / ORT inference",
     "dlheatmap torch-engine grad_cam", "onnxruntime inference"),
    ("torch engine: guided_grad_cam / ORT inference",
     "dlheatmap torch-engine guided_grad_cam", "onnxruntime inference"),
    ("grad_cam / captum LayerGradCam", "dlheatmap grad_cam", "captum LayerGradCam"),
    ("grad_cam / pytorch-grad-cam GradCAM", "dlheatmap grad_cam", "pytorch-grad-cam GradCAM"),
    ("guided / captum GuidedGradCam", "dlheatmap guided_grad_cam", "captum GuidedGradCam"),
    ("guided / pytorch-grad-cam GradCAM x GuidedBackprop", "dlheatmap guided_grad_cam",
     "pytorch-grad-cam GradCAM x GuidedBackprop"),
]


def ratio_table(rows: list[dict]) -> list[str]:
    def ms(model, batch, method):
        return next(r["ms"] for r in rows
                    if (r["model"], r["batch"], r["method"]) == (model, batch, method))

    lines = ["| model | batch | " + " | ".join(column for column, _, _ in RATIOS) + " |",
             "|---|---|" + "---|" * len(RATIOS)]
    for model, batch in sorted({(r["model"], r["batch"]) for r in rows}):
        cells = [f"{ms(model, batch, ours) / ms(model, batch, other):.2f}"
                 for _, ours, other in RATIOS]
        lines.append(f"| {model} | {batch} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input side (default 224)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per method")
    parser.add_argument("--growth-calls", type=int, default=1000,
                        help="calls for the memory-growth check")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--write", action="store_true", help="record in benchmarks/RESULTS.md")
    parser.add_argument("--one", choices=METHODS, dest="method", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.method:
        run_one(args)
        return 0

    print(describe_machine(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for model in args.models:
            path = export(model, args.size, folder)
            for batch in args.batches:
                for method in args.methods:
                    result = subprocess_measure(method, model, path, batch, args.size,
                                                args.repeats)
                    rows.append({"model": model, "batch": batch, "method": method, **result})
                    print(f"  {model:20s} b{batch:<2d} {method:42s} {result['ms']:9.1f} ms  "
                          f"peak +{result['mib']:7.1f} MiB", flush=True)
        extra = (first_use_and_growth(folder, args.size, args.growth_calls)
                 if set(MODELS) <= set(args.models) else [])

    report = ["## Medians and peak memory", "",
              "Peak memory: peak resident memory during the timed calls above the resident "
              "memory before them (after warm-up: sessions, modules and caches exist).", "",
              "| model | batch | method | median ms | peak +MiB |", "|---|---|---|---|---|"]
    report += [f"| {r['model']} | {r['batch']} | {r['method']} | {r['ms']:.1f} | {r['mib']:.0f} |"
               for r in rows]
    if set(METHODS) <= set(args.methods):
        report += ["", "## Ratios (dlheatmap / other; lower is better)", "", *ratio_table(rows)]
    report += ["", "## First use, later calls, memory over repeated calls", "",
               *extra]
    text = "\n".join(report)
    print("\n" + text)
    if args.write:
        header = ["# Benchmark results", "",
                  f"Recorded by `./run bench --write` (input {args.size} x {args.size}, "
                  f"{args.repeats} timed runs per method after 2 warm-up runs, random weights, "
                  "CPU).", "", f"Machine: {describe_machine()}", "", ""]
        path = ROOT / "benchmarks" / "RESULTS.md"
        # the sections of bench_confidence.py and bench_jobs.py, recorded apart: kept
        kept = "".join(f"\n{part}" for part in (section(path, CONFIDENCE_HEADING),
                                                 section(path, JOBS_SECTION)) if part)
        path.write_text("\n".join(header) + text + "\n" + kept)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
