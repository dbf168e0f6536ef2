"""Grad mode (no_grad, enable_grad, set_grad_enabled, inference_mode) and anomaly
detection, each beside PyTorch where PyTorch defines the behaviour."""
import threading

import numpy as np
import pytest

import tinyres

torch = pytest.importorskip("torch")
LIBS = (tinyres, torch)


@pytest.fixture(autouse=True)
def grad_mode_restored():
    """Whatever a test does, the next one starts with grad mode on in both engines."""
    yield
    torch.set_grad_enabled(True)
    tinyres.set_grad_enabled(True)


@pytest.mark.parametrize("lib", LIBS, ids=lambda m: m.__name__)
def test_set_grad_enabled_as_call_block_and_decorator(lib):
    assert lib.is_grad_enabled()
    with lib.set_grad_enabled(False):
        assert not lib.is_grad_enabled()
        with lib.set_grad_enabled(True):
            assert lib.is_grad_enabled()
        assert not lib.is_grad_enabled()
    assert lib.is_grad_enabled()

    lib.set_grad_enabled(False)            # a plain call: takes effect at once
    assert not lib.is_grad_enabled()
    lib.set_grad_enabled(True)
    assert lib.is_grad_enabled()

    @lib.set_grad_enabled(False)
    def inside():
        return lib.is_grad_enabled()
    assert lib.is_grad_enabled()           # decorating changed nothing
    assert inside() is False and lib.is_grad_enabled()


def test_one_no_grad_instance_entered_again_while_open():
    """torch 2.13 keeps the previous mode on the instance, so re-entering one instance
    leaves grad mode off after both blocks; tinyres keeps a stack per thread."""
    lib = tinyres
    block = lib.no_grad()
    with block:
        with block:
            assert not lib.is_grad_enabled()
        assert not lib.is_grad_enabled()
    assert lib.is_grad_enabled()

    @lib.no_grad()
    def depth(n):
        assert not lib.is_grad_enabled()
        return 0 if n == 0 else 1 + depth(n - 1)
    assert depth(5) == 5 and lib.is_grad_enabled()

    with lib.no_grad():
        with lib.enable_grad():
            assert lib.is_grad_enabled()
        assert not lib.is_grad_enabled()


@pytest.mark.parametrize("lib", LIBS, ids=lambda m: m.__name__)
def test_an_exception_inside_restores_grad_mode(lib):
    with pytest.raises(ValueError):
        with lib.no_grad():
            raise ValueError("boom")
    assert lib.is_grad_enabled()
    with pytest.raises(ValueError):
        with lib.set_grad_enabled(False):
            raise ValueError("boom")
    assert lib.is_grad_enabled()


@pytest.mark.parametrize("lib", LIBS, ids=lambda m: m.__name__)
def test_grad_mode_is_per_thread(lib):
    inside_no_grad, recorded = threading.Event(), threading.Event()
    seen = {}

    def quiet():
        with lib.no_grad():
            inside_no_grad.set()
            recorded.wait(10)
            seen["quiet"] = lib.is_grad_enabled()

    def recording():
        inside_no_grad.wait(10)
        x = lib.ones(2, requires_grad=True)
        seen["recording"] = (x * 2).requires_grad
        recorded.set()

    threads = [threading.Thread(target=quiet), threading.Thread(target=recording)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {"quiet": False, "recording": True}
    assert lib.is_grad_enabled()


@pytest.mark.parametrize("lib", LIBS, ids=lambda m: m.__name__)
def test_inference_mode_records_nothing_and_nests(lib):
    x = lib.ones(3, requires_grad=True)
    with lib.inference_mode():
        assert not lib.is_grad_enabled() and lib.is_inference_mode_enabled()
        y = x * 2
        with lib.inference_mode(False):
            assert not lib.is_inference_mode_enabled()
        assert lib.is_inference_mode_enabled()
    assert not y.requires_grad and y.is_inference()
    assert lib.is_grad_enabled() and not lib.is_inference_mode_enabled()


def sqrt_at_zero(lib):
    x = lib.tensor(np.array([0.0, 4.0]), requires_grad=True)
    y = x.sqrt() * lib.tensor(np.array([0.0, 1.0]))   # forward finite, backward 0 * inf
    return y.sum()


@pytest.mark.parametrize("lib", LIBS, ids=lambda m: m.__name__)
def test_detect_anomaly_names_the_op_and_where_it_was_called(lib):
    sqrt_at_zero(lib).backward()           # without it: NaN flows silently
    with pytest.warns(UserWarning) if lib is torch else _nothing():
        with lib.autograd.detect_anomaly():
            loss = sqrt_at_zero(lib)
            with pytest.raises(RuntimeError, match="Sqrt.*returned nan values") as err:
                loss.backward()
    if lib is tinyres:
        assert "sqrt_at_zero" in str(err.value) and "test_grad_mode.py" in str(err.value)
    assert not lib.is_anomaly_enabled()


@pytest.mark.parametrize("lib", LIBS, ids=lambda m: m.__name__)
def test_set_detect_anomaly_on_and_off(lib):
    lib.autograd.set_detect_anomaly(True)
    try:
        assert lib.is_anomaly_enabled()
        with pytest.raises(RuntimeError, match="Sqrt"), \
                (pytest.warns(UserWarning) if lib is torch else _nothing()):
            sqrt_at_zero(lib).backward()
    finally:
        lib.autograd.set_detect_anomaly(False)
    assert not lib.is_anomaly_enabled()
    sqrt_at_zero(lib).backward()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
