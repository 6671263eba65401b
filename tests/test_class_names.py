"""Class names: from a file's metadata_props in every documented form, the class IDs for
anything else (never an exception), and set_dl_model_param's names in the results.

Truths: names written out by hand, the IDs, and json.loads of the metadata text.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import dlheatmap as dl
from dlheatmap.graph import normalise
from tests import models
from tests.conftest import random_images
from tests.operator_calls import PROPERTY_SETTINGS


def _with_metadata(source, tmp_path, value: str, key: str = "class_names"):
    proto = onnx.load(source)
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value
    path = tmp_path / "metadata.onnx"
    onnx.save(proto, path)
    return path


NAMES = ["good", "scratch", "spot", "dent"]


@pytest.mark.parametrize("value", [
    '["good", "scratch", "spot", "dent"]',
    "('good', 'scratch', 'spot', 'dent')",
    '{"3": "dent", "1": "scratch", "0": "good", "2": "spot"}',
    "{2: 'spot', 0: 'good', 3: 'dent', 1: 'scratch'}",
    "good, scratch,\nspot, dent",
], ids=["json-list", "python-tuple", "json-dict", "python-dict", "text"])
def test_metadata_class_names_in_every_documented_form(tiny_path, tmp_path, value):
    model = dl.read_dl_model(_with_metadata(tiny_path, tmp_path, value, key="labels"))
    assert dl.get_dl_model_param(model, "class_names") == NAMES


ODD_METADATA = {
    "unhashable-key": "{[1]: 2}",
    "mixed-keys": "{0:'a','x':'b',2:'c',3:'d'}",
    "deep-nesting": "[" * 100000 + "]" * 100000,
    "nested-names": "[[1], [2], [3], [4]]",
    "names-as-keys": "{'a': 'w', 'b': 'x', 'c': 'y', 'd': 'z'}",
    "index-twice": "{0: 'a', '0': 'b', 2: 'c', 3: 'd'}",
    "none-in-list": "['a', None, 'c', 'd']",
    "broken-list": "[a, b, c, d",
}


@pytest.mark.parametrize("value", list(ODD_METADATA.values()), ids=list(ODD_METADATA))
def test_odd_metadata_class_names_fall_back_to_the_class_ids(tiny_path, tmp_path, value):
    """Unreadable or odd metadata never fails read_dl_model: the names are the IDs."""
    model = dl.read_dl_model(_with_metadata(tiny_path, tmp_path, value))
    assert dl.get_dl_model_param(model, "class_names") == ["0", "1", "2", "3"]


def test_metadata_dict_of_twelve_classes_is_in_numeric_order(tmp_path):
    """Keys '0' .. '11' are indices: 'c2' comes before 'c10', whatever the text's order."""
    names = [f"c{index}" for index in range(12)]
    source = models.linear_onnx(np.zeros((16, 12), np.float32), tmp_path / "twelve.onnx")
    backwards = list(reversed(list(enumerate(names))))
    for text in (json.dumps({str(i): name for i, name in backwards}),
                 repr({i: name for i, name in backwards}),
                 repr({f" {i}": name for i, name in backwards})):
        model = dl.read_dl_model(_with_metadata(source, tmp_path, text))
        assert dl.get_dl_model_param(model, "class_names") == names, text



def test_class_names_from_metadata(tmp_path, tiny_path):
    model = dl.read_dl_model(_with_metadata(tiny_path, tmp_path,
                                            '["good", "scratch", "spot", "dent"]'))
    assert dl.get_dl_model_param(model, "class_names") == ["good", "scratch", "spot", "dent"]


def test_set_class_names_changes_results(tiny, rng):
    dl.set_dl_model_param(tiny, "class_names", ["a", "b", "c", "d"])
    dl.set_dl_model_param(tiny, "class_ids", [10, 11, 12, 13])
    (result,) = dl.apply_dl_model(tiny, {"image": random_images(rng, 1, 32, 32, 3)[0]}, [])
    names = dict(zip([10, 11, 12, 13], "abcd", strict=True))
    assert [names[i] for i in result["classification_class_ids"]] == \
        result["classification_class_names"]



# --- any metadata text whatever: hypothesis ----------------------------------------------

_metadata_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 12) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.integers(-1, 12) | st.text("0123456789x ", max_size=3), inner, max_size=5),
    max_leaves=12)
_metadata_texts = st.one_of(
    st.text(max_size=30), _metadata_values.map(repr),
    _metadata_values.map(lambda value: json.dumps(value, default=str)),
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
)


@PROPERTY_SETTINGS
@example(text="{[1]: 2}")
@example(text="{0:'a','x':'b',2:'c',3:'d'}")
@example(text="[" * 100000 + "]" * 100000)
@given(text=_metadata_texts)
def test_any_metadata_gives_class_names_or_the_class_ids(tiny_proto, text):
    """Whatever text a file's metadata_props hold, reading the model does not fail and it has
    one string name per class; a list of four plain strings is taken as it is."""
    proto = copy.deepcopy(tiny_proto)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "class_names", text
    names = dl.get_dl_model_param(dl.Model(normalise(proto)), "class_names")
    assert len(names) == 4 and all(type(name) is str for name in names)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, list) and len(value) == 4 and all(type(v) is str for v in value):
        assert names == value


@pytest.fixture(scope="module")
def tiny_proto(tiny_path) -> onnx.ModelProto:
    return onnx.load(str(tiny_path))


