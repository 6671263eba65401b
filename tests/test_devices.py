"""Devices as HALCON scripts select them: query_available_dl_devices, get_dl_device_param and
the model parameter 'device'.

Truths: onnxruntime's own provider list (GPU devices exist exactly when it offers CUDA); a
provider list patched to offer CUDA; the CPU results of the same model for a GPU device that
falls back to the CPU.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import dlheatmap as dl
from dlheatmap.runtime.devices import GPUFallbackWarning
from dlheatmap.spec import operator_spec
from tests import models
from tests.conformance_fixtures import valid_sample


@pytest.fixture
def cuda_offered(monkeypatch):
    """onnxruntime offering its CUDA provider (no GPU behind it on this machine)."""
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: providers)


def test_cpu_always_gpu_only_with_cuda_provider():
    devices = dl.query_available_dl_devices([], [])
    assert devices[0].kind == "cpu" and devices[0].provider == "CPUExecutionProvider"
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert any(device.kind == "gpu" for device in devices) == has_cuda
    gpus = dl.query_available_dl_devices("runtime", "gpu")
    assert bool(gpus) == has_cuda
    assert dl.query_available_dl_devices(["runtime", "runtime"], ["gpu", "cpu"])[-1].kind == "cpu"


def test_gpu_devices_follow_the_provider_list(cuda_offered):
    both = dl.query_available_dl_devices(["runtime", "runtime"], ["gpu", "cpu"])
    assert [device.kind for device in both][-1] == "cpu" and both[0].kind == "gpu"
    gpu = both[0]
    assert dl.get_dl_device_param(gpu, "type") == ["gpu"]
    assert dl.get_dl_device_param(gpu, "id") == [0]
    assert dl.get_dl_device_param(gpu, "execution_provider") == ["CUDAExecutionProvider"]
    assert dl.get_dl_device_param(gpu, "ai_accelerator_interface") == ["none"]
    assert dl.query_available_dl_devices(["runtime", "runtime"], ["cpu", "gpu"])[0].kind == "cpu"
    assert dl.query_available_dl_devices(["type", "id"], ["gpu", 0]) == [gpu]
    assert dl.query_available_dl_devices(["type", "id"], ["gpu", 5]) == []


def test_every_device_parameter_listed_in_the_spec_is_answered():
    (cpu,) = dl.query_available_dl_devices("runtime", "cpu")
    names = operator_spec("get_dl_device_param").extra["names"]
    values = {name: dl.get_dl_device_param(cpu, name) for name in names}
    assert values["type"] == values["runtime"] == ["cpu"]
    assert values["id"] == [0] and values["name"] and isinstance(values["name"][0], str)
    assert set(values["precisions"]) == {"float32", "float16", "int8"}
    assert set(values["cast_precisions"]) | set(values["calibration_precisions"]) == \
        set(values["precisions"])
    (params,) = values["optimize_for_inference_params"]
    assert isinstance(params, dict)


def test_device_parameter_sets_runtime_and_gpu_and_falls_back(cuda_offered):
    model = dl.read_dl_model(models.tiny_cnn())
    (cpu,) = dl.get_dl_model_param(model, "device")
    assert cpu == dl.query_available_dl_devices("runtime", "cpu")[0]
    expected = dl.apply_dl_model(model, valid_sample(), [])

    (gpu,) = dl.query_available_dl_devices("runtime", "gpu")
    dl.set_dl_model_param(model, "device", gpu)
    assert dl.get_dl_model_param(model, "runtime") == ["gpu"]
    assert dl.get_dl_model_param(model, "gpu") == [0]
    assert dl.get_dl_model_param(model, "device") == [gpu]
    with pytest.warns(GPUFallbackWarning):
        results = dl.apply_dl_model(model, valid_sample(), [])
    np.testing.assert_allclose(results[0]["classification_confidences"],
                               expected[0]["classification_confidences"], rtol=1e-6)

    dl.set_dl_model_param(model, "runtime", "cpu")
    assert dl.get_dl_model_param(model, "device") == [cpu]


def test_without_cuda_a_gpu_runtime_reports_an_unavailable_device():
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine's onnxruntime offers CUDA")
    model = dl.read_dl_model(models.tiny_cnn())
    dl.set_dl_model_param(model, "runtime", "gpu")
    (device,) = dl.get_dl_model_param(model, "device")
    assert device.kind == "gpu" and "not available" in device.name
    assert device not in dl.query_available_dl_devices()
