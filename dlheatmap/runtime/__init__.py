"""Execution back ends: onnxruntime for forward passes, PyTorch (through onnx2torch) for the
gradients. Nothing here imports torch until a gradient is first asked for."""
