"""The operators never modify their inputs, and parameters and results never alias the
caller's lists and arrays."""

from __future__ import annotations

import copy

import numpy as np

import dlheatmap as dl
from tests import conformance_fixtures as cf
from tests.operator_calls import heatmap_of, image_pairs


def test_inputs_are_never_modified(tiny_path):
    handle = dl.read_dl_model(tiny_path)
    base = cf.valid_image(9)
    images = [
        base,
        base.astype(np.float64),
        np.asfortranarray(base),
        base[::1, ::1, :],
        np.broadcast_to(base[:1, :1], base.shape),  # read-only view
    ]
    readonly = base.copy()
    readonly.flags.writeable = False
    images.append(readonly)
    samples = [{"image": image, "extra": [1, 2]} for image in images]
    gen_param = {"target_conv_layer": ["/4/Conv"], "use_conv_only": True, "scaling": "none"}
    target, outputs = [1], ["classification_class_ids"]
    snapshot = copy.deepcopy((samples, gen_param, target, outputs))
    flags = [(image.flags.writeable, image.flags.c_contiguous) for image in images]

    results = dl.gen_dl_model_heatmap(handle, samples, "grad_cam", target, gen_param)
    results += dl.gen_dl_model_heatmap(handle, samples, "guided_grad_cam", target,
                                       {"target_conv_layer": "/4/Conv"})
    dl.apply_dl_model(handle, samples, outputs)

    after = (samples, gen_param, target, outputs)
    for one, two in zip(samples, snapshot[0], strict=True):
        assert list(one) == list(two)  # no result keys were added to the samples
        np.testing.assert_array_equal(one["image"], two["image"])
        assert one["image"].dtype == two["image"].dtype and one["extra"] == two["extra"]
    assert after[1:] == snapshot[1:]
    assert [(i.flags.writeable, i.flags.c_contiguous) for i in images] == flags
    for result in results:  # results own their memory
        for value in result.values():
            arrays = value.values() if isinstance(value, dict) else []
            for array in arrays:
                assert not any(np.shares_memory(array, image) for image in images)


def test_parameters_do_not_alias_callers_lists(tiny_path):
    handle = dl.read_dl_model(tiny_path)
    names = ["cat", "dog", "bird", "fish"]
    dl.set_dl_model_param(handle, "class_names", names)
    names[0] = "changed"
    got = dl.get_dl_model_param(handle, "class_names")
    assert got == ["cat", "dog", "bird", "fish"]
    got[1] = "changed too"
    assert dl.get_dl_model_param(handle, "class_names") == ["cat", "dog", "bird", "fish"]

    first = dl.gen_dl_model_heatmap(handle, image_pairs(1)[0], "grad_cam", [], None)
    _, heatmap = heatmap_of(first[0])
    heatmap[...] = 99.0  # callers may write into their results
    second = dl.gen_dl_model_heatmap(handle, image_pairs(1)[0], "grad_cam", [], None)
    assert heatmap_of(second[0])[1].max() <= 1.0
