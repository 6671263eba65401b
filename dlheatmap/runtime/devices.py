"""Choosing where models run: 'cpu', or 'gpu' with a clean fallback to the CPU; and the
device handles HALCON scripts select them by (query_available_dl_devices)."""

from __future__ import annotations

import platform
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


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
            return [(CUDA_PROVIDER, {"device_id": self.index}), CPU_PROVIDER]
        return [CPU_PROVIDER]


@dataclass(frozen=True)
class DLDevice:
    """A device handle, as query_available_dl_devices returns them.

    ``kind`` is 'cpu' or 'gpu' (HALCON's 'type' and 'runtime'), ``index`` the GPU number
    ('id'; 0 for the CPU), ``name`` what the machine calls it and ``provider`` the
    onnxruntime execution provider that runs on it.
    """

    kind: str
    index: int
    name: str
    provider: str

    @property
    def device(self) -> Device:
        """Where a call on this device runs."""
        return Device(self.kind, self.index)


def available_devices() -> list[DLDevice]:
    """The CPU, and one GPU device per CUDA device where onnxruntime offers its CUDA
    provider (torch counts them; one where torch is missing), looked up on every call."""
    import onnxruntime as ort

    devices = [DLDevice("cpu", 0, _cpu_name(), CPU_PROVIDER)]
    if CUDA_PROVIDER in ort.get_available_providers():
        devices += [DLDevice("gpu", index, name, CUDA_PROVIDER)
                    for index, name in enumerate(_cuda_names())]
    return devices


def device_handle(runtime: str, gpu: int) -> DLDevice:
    """The handle of the device that ``runtime`` and ``gpu`` select (also a GPU that is not
    available: the call then falls back to the CPU with a warning)."""
    for device in available_devices():
        if device.kind == runtime and device.index == (gpu if runtime == "gpu" else 0):
            return device
    return DLDevice("gpu", gpu, f"CUDA device {gpu} (not available)", CUDA_PROVIDER)


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "CPU"


def _cuda_names() -> list[str]:
    try:
        import torch
    except ImportError:
        return ["CUDA device 0"]
    if not torch.cuda.is_available():
        return ["CUDA device 0"]
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


@cache
def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return CUDA_PROVIDER in ort.get_available_providers()


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
