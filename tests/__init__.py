"""dlheatmap's tests, one file per behaviour (``test_<behaviour>.py``).

Shared, not tests themselves:

- ``conftest.py``: the ``tiny_path`` fixture (the tiny CNN, the one way tests obtain it) and
  ``tiny`` (a fresh handle on it);
- ``models.py``: torch-exported and trained models, cached under ``.cache/``; ``zoo.py``: the
  model-zoo matrix (also a script that writes spec/coverage.md);
- ``graphs.py``: hand-built ONNX graphs (onnx.helper);
- ``reference.py``: truths computed without dlheatmap's engines (onnx2torch's own conversion,
  torch autograd, captum, a numpy bilinear resize);
- ``operator_calls.py``: HALCON operator calls shared by the reliability tests;
- ``conformance_fixtures.py``: the fixtures named by spec/operators.toml's ``[[rules]]``.
"""
