"""Thread safety: concurrent calls on one handle give the results of the same calls made
serially, bit for bit, also while other threads set parameters or clear the handle."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import dlheatmap as dl
from tests import conformance_fixtures as cf
from tests.operator_calls import VARIANTS, call_variant, flatten, heatmap_of, image_pairs

THREADS = 8
CALLS_PER_THREAD = 200
WEIGHTS = (0.25, 0.15, 0.15, 0.1, 0.05, 0.3)  # guided Grad-CAM is ~20x slower than the rest



def _run_threads(worker, count: int = THREADS) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            worker(index)
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
        assert not thread.is_alive(), "a thread hung"
    return errors


def _run_threads_beside(setter, stop: threading.Event, worker) -> list[BaseException]:
    """:func:`_run_threads` while ``setter`` runs in one more thread until ``stop`` is set,
    which happens once the workers are done."""
    changer = threading.Thread(target=setter)
    changer.start()
    try:
        return _run_threads(worker)
    finally:
        stop.set()
        changer.join()


def _assert_identical(got: list[dict], expected: list[tuple[str, np.ndarray]]) -> None:
    flat = flatten(got)
    assert [key for key, _ in flat] == [key for key, _ in expected]
    for (key, value), (_, reference) in zip(flat, expected, strict=True):
        assert value.dtype == reference.dtype and value.shape == reference.shape, key
        assert np.array_equal(value, reference), key


def test_threads_on_one_handle_match_serial_calls_bit_for_bit(tiny_path):
    """8 threads x 200 calls (Grad-CAM variants, Guided Grad-CAM, apply) on one handle.

    Each call's result must be bit-identical to the same call made serially beforehand: a call
    shares sessions and torch modules with the others but no intermediate state, and the same
    kernels on the same batch give the same bits. Any difference would reveal state leaking
    between concurrent calls, so the comparison is exact, not approximate. The reference comes
    from a second handle on the same file; the threads start together on a fresh handle, so
    they also race to build its sessions and torch modules.
    """
    serial = dl.read_dl_model(tiny_path)
    inputs = image_pairs(8)
    reference = {(v, i): flatten(call_variant(serial, VARIANTS[v], inputs[i]))
                 for v in range(len(VARIANTS)) for i in range(len(inputs))}
    handle = dl.read_dl_model(tiny_path)
    start = threading.Barrier(THREADS)
    done = []

    def worker(index: int) -> None:
        rng = np.random.default_rng(index)
        start.wait()
        for _ in range(CALLS_PER_THREAD):
            v = int(rng.choice(len(VARIANTS), p=WEIGHTS))
            i = int(rng.integers(len(inputs)))
            _assert_identical(call_variant(handle, VARIANTS[v], inputs[i]), reference[(v, i)])
            done.append(1)

    errors = _run_threads(worker)
    assert not errors, errors[0]
    assert len(done) == THREADS * CALLS_PER_THREAD


def test_set_param_during_calls_never_mixes_two_parameter_states(tiny_path):
    """Heatmaps for class ID 2 run while another thread swaps the class IDs between
    [0, 1, 2, 3] and [3, 2, 1, 0] (ID 2 is output 2, then output 1), and the batch size and the
    grey-value range. Class names stay 'i0' .. 'i3', naming the outputs. Each call must use one
    parameter state throughout: its class IDs are all of one state, and its heatmap for ID 2
    is the serial heatmap of the output that ID 2 names in that same state (up to 1e-5: the
    batch size changes how samples are grouped, which may change the last bits). A call that
    chose the output under one state and labelled the result under the other would fail."""
    handle = dl.read_dl_model(tiny_path)
    dl.set_dl_model_param(handle, "class_names", ["i0", "i1", "i2", "i3"])
    inputs = image_pairs(4)
    states = ([0, 1, 2, 3], [3, 2, 1, 0])
    # serial heatmaps per input pair and output index, under the first state (ID = output)
    reference = {(i, output): flatten(call_variant(handle, ("grad_cam", [output], None), inputs[i]))
                 for i in range(4) for output in (1, 2)}
    stop = threading.Event()
    seen_states = set()

    def setter() -> None:
        flip = 0
        while not stop.is_set():
            flip ^= 1
            dl.set_dl_model_param(handle, "class_ids", states[flip])
            dl.set_dl_model_param(handle, "batch_size", 1 + flip)
            dl.set_dl_model_param(handle, "image_range_min", -127.0 + flip)

    def worker(index: int) -> None:
        for call in range(60):
            pair = (index + call) % 4
            results = dl.gen_dl_model_heatmap(handle, inputs[pair], "grad_cam", [2], None)
            for position, result in enumerate(results):
                outputs = [int(name[1]) for name in result["classification_class_names"]]
                ids = result["classification_class_ids"]
                state = next(s for s, ids_of in enumerate(states)
                             if ids == [ids_of[output] for output in outputs])
                seen_states.add(state)
                class_id, heatmap = heatmap_of(result)
                assert class_id == 2
                output = states[state].index(2)
                expected = dict(reference[(pair, output)])
                np.testing.assert_allclose(
                    heatmap, expected[f"{position}.heatmap_grad_cam.heatmap_image_class_{output}"],
                    rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(
                    result["classification_confidences"],
                    expected[f"{position}.classification_confidences."], rtol=1e-5, atol=1e-6)

    errors = _run_threads_beside(setter, stop, worker)
    assert not errors, errors[0]
    assert seen_states == {0, 1}  # both states were really in use


def _assert_close(flat: list, reference: list) -> None:
    assert [key for key, _ in flat] == [key for key, _ in reference]
    for (key, value), (_, expected) in zip(flat, reference, strict=True):
        if value.dtype.kind == "f":
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            assert np.array_equal(value, expected), key


def test_size_change_during_calls_gives_old_or_new_size_never_a_mix():
    """On a model with symbolic width and height, a call validated at one size is run at that
    size even if another thread sets image_dimensions meanwhile: each call either succeeds
    with the result of a serial call at the sample's size, or refuses the sample (1302)."""
    handle = dl.read_dl_model(cf.symbolic_size_path())
    sizes = (8, 12)
    images = {size: cf.valid_image(1, size=size) for size in sizes}
    reference = {}
    for size in sizes:
        dl.set_dl_model_param(handle, "image_dimensions", [size, size, 3])
        reference[size] = flatten(dl.gen_dl_model_heatmap(handle, {"image": images[size]},
                                                           "grad_cam", [], None))
    stop = threading.Event()
    outcomes = {"ok": 0, "1302": 0}

    def setter() -> None:
        while not stop.is_set():
            for size in sizes:
                dl.set_dl_model_param(handle, "image_dimensions", [size, size, 3])

    def worker(index: int) -> None:
        size = sizes[index % 2]
        for _ in range(40):
            try:
                results = dl.gen_dl_model_heatmap(handle, {"image": images[size]}, "grad_cam",
                                                  [], None)
            except dl.HOperatorError as error:
                assert error.error_code == 1302, str(error)
                outcomes["1302"] += 1
                continue
            _assert_close(flatten(results), reference[size])
            outcomes["ok"] += 1

    errors = _run_threads_beside(setter, stop, worker)
    assert not errors, errors[0]
    assert outcomes["ok"] + outcomes["1302"] == THREADS * 40
    assert outcomes["ok"] > 0


def test_clear_during_calls_finishes_or_refuses_with_2450(tiny_path):
    """clear_dl_model while 8 threads use the handle: a running call either completes with the
    serial result or raises 2450; afterwards every call raises 2450 and the caches are empty."""
    handle = dl.read_dl_model(tiny_path)
    inputs = image_pairs(4)
    variants = (VARIANTS[0], VARIANTS[5])
    reference = {(v, i): flatten(call_variant(handle, variants[v], inputs[i]))
                 for v in range(2) for i in range(4)}
    completed, refused = [], []
    enough = threading.Event()

    def worker(index: int) -> None:
        for call in range(400):
            v, i = call % 2, (index + call) % 4
            try:
                results = call_variant(handle, variants[v], inputs[i])
            except dl.HOperatorError as error:
                assert error.error_code == 2450, str(error)
                refused.append(call)
                return
            _assert_identical(results, reference[(v, i)])
            completed.append(1)
            if len(completed) >= 200:
                enough.set()

    errors: list[BaseException] = []
    runner = threading.Thread(target=lambda: errors.extend(_run_threads(worker)))
    runner.start()
    assert enough.wait(timeout=120), "the threads made no progress"
    dl.clear_dl_model(handle)  # while the threads are busy
    runner.join()
    assert not errors, errors[0]
    assert len(refused) == THREADS  # every thread ran into the cleared handle
    assert len(handle._cache) == 0
    with pytest.raises(dl.HOperatorError) as raised:
        dl.gen_dl_model_heatmap(handle, inputs[0], "grad_cam", [], None)
    assert raised.value.error_code == 2450


