"""Choosing where models run: 'cpu', or 'gpu' with a clean fallback to the CPU."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache


class GPUFallbackWarning(RuntimeWarning):
    """runtime 'gpu' was asked for, but no usable GPU was found; the CPU is used instead."""


@dataclass(frozen=True)
class Device:
    """Where one call runs: ``kind`` is 'cpu' or 'gpu'; ``index`` is the GPU number."""

    kind: str = "cpu"
    index: int = 0

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.index}" if self.kind == "gpu" else "cpu"

    @property
    def ort_providers(self) -> list:
        if self.kind == "gpu":
            return [("CUDAExecutionProvider", {"device_id": self.index}), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]


@cache
def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@cache
def _torch_has_cuda(index: int) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available() and index < torch.cuda.device_count()


def resolve_device(runtime: str, gpu: int = 0) -> Device:
    """The device to use for ``runtime``; 'gpu' falls back to 'cpu' with a warning."""
    if runtime != "gpu":
        return Device("cpu")
    if _ort_has_cuda() and _torch_has_cuda(gpu):
        return Device("gpu", gpu)
    warnings.warn(
        "runtime 'gpu' requested but no usable CUDA GPU was found for onnxruntime and PyTorch; "
        "running on the CPU",
        GPUFallbackWarning,
        stacklevel=3,
    )
    return Device("cpu")
