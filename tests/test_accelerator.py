"""tinyres.accelerator and tinyres.backends.mps answer as torch.accelerator and
torch.backends.mps do on the same machine (values, and the kind and text of the error
where no accelerator is there); with CUDA made usable, current_accelerator names it."""
import pytest

import tinyres
from tinyres import accelerator, cuda


def outcome(call):
    """A call's value, or its error's class name and message."""
    try:
        return call()
    except Exception as err:        # the error is the outcome being compared
        return type(err).__name__, str(err)


def test_the_questions_match_torch_on_this_machine():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available() != tinyres.cuda.is_available():
        pytest.skip("torch and tinyres see different CUDA set-ups here")
    theirs = torch.accelerator
    assert accelerator.is_available() == theirs.is_available()
    assert accelerator.device_count() == theirs.device_count()
    ours, expected = accelerator.current_accelerator(), theirs.current_accelerator(True)
    assert (ours is None) == (expected is None)
    if expected is not None:
        assert ours.type == expected.type
    if not theirs.is_available():
        for name, args in (("current_device_index", ()), ("set_device_index", (0,)),
                           ("synchronize", ())):
            assert outcome(lambda: getattr(accelerator, name)(*args)) == outcome(
                lambda: getattr(theirs, name)(*args))


def test_mps_is_neither_available_nor_built_as_in_torch_off_apple():
    torch = pytest.importorskip("torch")
    assert tinyres.backends.mps.is_available() is False
    assert tinyres.backends.mps.is_built() is False
    if not torch.backends.mps.is_built():
        assert torch.backends.mps.is_available() is False


def test_a_usable_cuda_is_the_current_accelerator(monkeypatch):
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: 2)
    monkeypatch.setattr(cuda, "current_device", lambda: 1)
    assert accelerator.is_available() and accelerator.device_count() == 2
    assert accelerator.current_accelerator() == tinyres.device("cuda")
    assert accelerator.current_accelerator(check_available=True) == tinyres.device("cuda")
    assert accelerator.current_device_index() == 1


def test_no_usable_cuda_means_no_accelerator(monkeypatch):
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    monkeypatch.setattr(cuda, "device_count", lambda: 0)
    assert not accelerator.is_available() and accelerator.device_count() == 0
    assert accelerator.current_accelerator() is None
    with pytest.raises(RuntimeError, match="none is available"):
        accelerator.synchronize()
