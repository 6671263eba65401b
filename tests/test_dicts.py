"""HALCON's dictionary operators on plain dicts.

Truths: HALCON's documented behaviour (a missing key is 2894, tuples come back as lists,
objects and tuples are separate, dicts are handles changed in place) and round-trip
properties checked with hypothesis.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dlheatmap.halcon as ha
from dlheatmap.errors import HOperatorError

scalars = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                    st.text(max_size=8))


@given(key=st.one_of(st.text(min_size=1, max_size=10), st.integers(-5, 5)),
       values=st.lists(scalars, max_size=6))
def test_tuple_round_trip(key, values):
    handle = ha.create_dict()
    ha.set_dict_tuple(handle, key, values)
    assert ha.get_dict_tuple(handle, key) == values
    assert ha.get_dict_param(handle, "keys", []) == [key]


def test_single_values_are_plain_in_the_dict_and_lists_outside():
    handle = ha.create_dict()
    ha.set_dict_tuple(handle, "width", [224])
    ha.set_dict_tuple(handle, "name", "jet")
    ha.set_dict_tuple(handle, "means", np.array([1.5, 2.5]))
    assert handle == {"width": 224, "name": "jet", "means": [1.5, 2.5]}
    assert ha.get_dict_tuple(handle, "width") == [224]
    assert ha.get_dict_tuple_s(handle, "width") == 224
    assert ha.get_dict_tuple(handle, "means") == [1.5, 2.5]


def test_objects_are_kept_as_they_are():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    sample = ha.create_dict()
    ha.set_dict_object(image, sample, "image")
    assert ha.get_dict_object(sample, "image") is image
    assert ha.get_dict_param(sample, "key_data_type", "image") == ["object"]


def test_nested_dicts_are_handles():
    outer, inner = ha.create_dict(), ha.create_dict()
    ha.set_dict_tuple(outer, "gen", inner)
    ha.set_dict_tuple(ha.get_dict_tuple_s(outer, "gen"), "scaling", "none")
    assert inner == {"scaling": "none"}  # same handle, changed in place
    assert ha.get_dict_param(outer, "key_data_type", ["gen"]) == ["dict"]


@pytest.mark.parametrize("call", [
    lambda d: ha.get_dict_tuple(d, "missing"),
    lambda d: ha.get_dict_object(d, "missing"),
    lambda d: ha.get_dict_param(d, "key_data_type", ["missing"]),
])
def test_missing_key_is_2894(call):
    with pytest.raises(HOperatorError) as info:
        call({"present": 1})
    assert info.value.error_code == 2894
    assert "2894" in str(info.value)


def test_key_exists_and_keys_in_insertion_order():
    handle = {"b": 1, "a": np.zeros(2), 3: "x"}
    assert ha.get_dict_param(handle, "keys", []) == ["b", "a", 3]
    assert ha.get_dict_param(handle, "key_exists", ["a", "zz", 3]) == [1, 0, 1]
    assert ha.get_dict_param_s(handle, "key_exists", "b") == 1


def test_wrong_kind_of_value_is_2896():
    handle = {"image": np.zeros((2, 2)), "ids": [1, 2]}
    with pytest.raises(HOperatorError) as info:
        ha.get_dict_tuple(handle, "image")
    assert info.value.error_code == 2896
    with pytest.raises(HOperatorError) as info:
        ha.get_dict_object(handle, "ids")
    assert info.value.error_code == 2896


def test_single_value_variants_refuse_other_lengths():
    handle = {"ids": [1, 2], "none": []}
    for key in ("ids", "none"):
        with pytest.raises(HOperatorError) as info:
            ha.get_dict_tuple_s(handle, key)
        assert info.value.error_code == 2895


@pytest.mark.parametrize("call,code", [
    (lambda: ha.get_dict_tuple("not a dict", "k"), 2450),
    (lambda: ha.set_dict_tuple(None, "k", 1), 2450),
    (lambda: ha.get_dict_tuple({}, 1.5), 1202),
    (lambda: ha.get_dict_tuple({}, ""), 1302),
    (lambda: ha.set_dict_object([1, 2], {}, "k"), 1201),
    (lambda: ha.get_dict_param({}, "size", []), 1302),
    (lambda: ha.get_dict_param({}, 5, []), 1202),
])
def test_argument_errors(call, code):
    with pytest.raises(HOperatorError) as info:
        call()
    assert info.value.error_code == code


def test_remove_dict_key_ignores_missing_keys():
    handle = {"a": 1, "b": 2}
    ha.remove_dict_key(handle, ["a", "zz"])
    assert handle == {"b": 2}


def test_handle_passed_as_one_element_tuple():
    handle = {"x": 5}
    assert ha.get_dict_tuple_s([handle], "x") == 5  # as HDevEngine returns dict outputs


def test_heatmap_results_read_the_halcon_way(tiny):
    image = np.zeros((32, 32, 3), np.float32)
    sample = ha.create_dict()
    ha.set_dict_object(image, sample, "image")
    gen = ha.create_dict()
    ha.set_dict_tuple(gen, "scaling", "scale_after_relu")
    result = ha.gen_dl_model_heatmap_s(tiny, sample, "grad_cam", [], gen)
    class_id = ha.get_dict_tuple(result, "classification_class_ids")[0]
    heatmaps = ha.get_dict_tuple_s(result, "heatmap_grad_cam")
    heatmap = ha.get_dict_object(heatmaps, f"heatmap_image_class_{class_id}")
    assert heatmap.shape == (32, 32)
    assert ha.get_dict_param(result, "key_data_type", "heatmap_grad_cam") == ["dict"]
