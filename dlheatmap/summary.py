"""The 'summary' model parameter: one line per ONNX node, HALCON style.

Format (spec/decisions.md): a header line, then per node in graph order
``ID; NAME; TYPE; OUTPUT SHAPE; NUM PARAMS; CONNECTED NODES``, where OUTPUT SHAPE is
width x height x depth of the node's first output and CONNECTED NODES lists the IDs of the
nodes that consume any of its outputs, comma-separated ('-' if none). Tensors still in an
NHWC image input's layout (before its Transpose to NCHW) are read as N x H x W x C.
"""

from __future__ import annotations

from dlheatmap.model import Model

HEADER = "ID; NAME; TYPE; OUTPUT SHAPE; NUM PARAMS; CONNECTED NODES"


def format_shape(shape: tuple | None, layout: str = "NCHW") -> str:
    """width x height x depth of an N x C x H x W (or N x C, N x C x L) tensor, or of an
    N x H x W x C one with ``layout`` 'NHWC'."""
    if shape is None:
        return "?"
    if layout == "NHWC" and len(shape) == 4:
        _, height, width, depth = shape
        return f"{width}x{height}x{depth}"
    dims = list(shape[1:]) if len(shape) >= 2 else list(shape)
    if len(dims) == 3:  # C, H, W
        depth, height, width = dims
    elif len(dims) == 2:  # C, L
        depth, height, width = dims[0], 1, dims[1]
    elif len(dims) == 1:
        depth, height, width = dims[0], 1, 1
    elif not dims:
        depth, height, width = 1, 1, 1
    else:  # rank > 4: fold the leading dims into depth
        depth, height, width = _product(dims[:-2]), dims[-2], dims[-1]
    return f"{width}x{height}x{depth}"


def _product(values) -> int:
    result = 1
    for value in values:
        result *= value
    return result


def summary_lines(model: Model) -> list[str]:
    # Graphs without a single image input (read, refused by the operators) have no input
    # size to infer shapes from: their summary shows '?' shapes instead of failing.
    shapes = model.tensor_shapes() if model.info.image_input is not None else {}
    lines = [HEADER]
    for layer in model.info.layers:
        consumers = ",".join(str(index) for index in layer.consumers) or "-"
        layout = "NHWC" if layer.output in model.info.nhwc_tensors else "NCHW"
        shape = format_shape(shapes.get(layer.output), layout)
        lines.append(
            f"{layer.index}; {layer.name}; {layer.kind}; {shape}; {layer.num_params}; {consumers}"
        )
    return lines
