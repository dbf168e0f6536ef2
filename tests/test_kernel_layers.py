"""The kernel-layer switch: tinyres.kernels.use() as a call, a block and per thread, the
environment variable, the errors, and a small ResNet trained on each CPU layer."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import tinyres
import tinyres.nn.functional as F
from tinyres import kernels
from tinyres.backend import cuda_is_available, kernels_for
from tinyres.kernels import cpu, reference
from tinyres.models import resnet20
from tinyres.optim import SGD


@pytest.fixture(autouse=True)
def by_device_afterwards():
    yield
    kernels.use(None)


def test_use_as_a_call_and_as_a_block():
    x = np.zeros(3)
    assert kernels_for(x) is cpu
    with kernels.use("reference"):
        assert kernels_for(x) is reference
        with kernels.use("cpu"):
            assert kernels_for(x) is cpu
        assert kernels_for(x) is reference
    assert kernels_for(x) is cpu
    kernels.use("reference")
    assert kernels_for(x) is reference and kernels.chosen() == "reference"
    kernels.use(None)
    assert kernels_for(x) is cpu and kernels.chosen() is None


def test_an_exception_inside_the_block_restores_the_layer():
    with pytest.raises(KeyError):
        with kernels.use("reference"):
            raise KeyError("boom")
    assert kernels_for(np.zeros(1)) is cpu


def test_the_choice_is_per_thread():
    seen = {}
    chose, looked = threading.Event(), threading.Event()

    def choosing():
        kernels.use("reference")
        chose.set()
        looked.wait(10)
        seen["choosing"] = kernels_for(np.zeros(1)).__name__

    def other():
        chose.wait(10)
        seen["other"] = kernels_for(np.zeros(1)).__name__
        looked.set()

    threads = [threading.Thread(target=choosing), threading.Thread(target=other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {"choosing": "tinyres.kernels.reference", "other": "tinyres.kernels.cpu"}


def test_unknown_layers_and_unusable_cuda_are_clear_errors():
    with pytest.raises(ValueError, match="unknown kernel layer 'numba'; expected one of "
                                         "'reference', 'cpu', 'cuda'"):
        kernels.use("numba")
    if not cuda_is_available():
        with pytest.raises(RuntimeError, match="device 'cuda' was requested but"):
            kernels.use("cuda")


def test_the_environment_variable_chooses_for_a_whole_run():
    code = ("import numpy as np, tinyres; from tinyres.backend import kernels_for; "
            "print(kernels_for(np.zeros(1)).__name__)")
    env = {**os.environ, "TINYRES_KERNELS": "reference"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "tinyres.kernels.reference"
    env["TINYRES_KERNELS"] = "fast"
    failed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True)
    assert failed.returncode != 0 and "TINYRES_KERNELS: unknown kernel layer 'fast'" in \
        failed.stderr


def test_the_kernel_folder_refuses_a_second_name(tmp_path):
    # the folder that holds tinyres.kernels on sys.path makes it importable as `kernels`;
    # that copy refuses, by name, before any of its kernels can compile into Numba's cache
    holder = os.path.dirname(os.path.dirname(os.path.abspath(kernels.__file__)))
    code = f"import sys; sys.path.insert(0, {holder!r}); from kernels import cpu"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    failed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, cwd=tmp_path)
    assert failed.returncode != 0
    assert "ImportError: kernels: this is tinyres's kernel package; import it as " \
           "tinyres.kernels" in failed.stderr
    assert not any(tmp_path.rglob("*.nbi"))      # nothing compiled, nothing cached
    assert kernels.__name__ == "tinyres.kernels" and cpu.__name__ == "tinyres.kernels.cpu"


def two_training_steps(layer):
    tinyres.manual_seed(0)
    model = resnet20().double()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = tinyres.randn(4, 3, 32, 32).double()
    y = tinyres.tensor([0, 3, 5, 9])
    losses = []
    with kernels.use(layer):
        for _ in range(2):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses, model.state_dict()


def test_a_resnet_trains_the_same_on_each_cpu_layer():
    (ref_losses, ref_state), (cpu_losses, cpu_state) = map(two_training_steps,
                                                           ["reference", "cpu"])
    np.testing.assert_allclose(ref_losses, cpu_losses, rtol=1e-10)
    assert ref_losses[1] != ref_losses[0]
    for key, value in ref_state.items():
        np.testing.assert_allclose(value, cpu_state[key], rtol=1e-10, atol=1e-10, err_msg=key)


def grouped_dilated_net_gradients(layer):
    """A depthwise-separable block with a dilated 'same' conv, a reflect-padded grouped conv
    and a transposed conv, forward and backward in float64 on one kernel layer."""
    tinyres.manual_seed(1)
    blocks = tinyres.nn.Sequential(
        tinyres.nn.Conv2d(4, 8, 3, groups=4, padding="same", dilation=2),
        tinyres.nn.Conv2d(8, 8, 1),
        tinyres.nn.Conv2d(8, 4, 3, groups=2, padding=1, padding_mode="reflect"),
        tinyres.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2))
    blocks.double()
    x = tinyres.randn(2, 4, 9, 9).double()
    with kernels.use(layer):
        out = blocks(x)
        out.backward(tinyres.ones_like(out) * tinyres.randn(*out.shape).double())
    return out.numpy(), {name: p.grad.numpy() for name, p in blocks.named_parameters()}


def test_grouped_dilated_and_transposed_convs_agree_on_each_cpu_layer():
    (ref_out, ref_grads), (cpu_out, cpu_grads) = map(grouped_dilated_net_gradients,
                                                     ["reference", "cpu"])
    assert ref_out.shape == (2, 2, 18, 18)
    np.testing.assert_allclose(cpu_out, ref_out, rtol=1e-10, atol=1e-12)
    assert ref_grads.keys() == cpu_grads.keys() and len(ref_grads) == 8
    for name, grad in ref_grads.items():
        assert np.abs(grad).max() > 0, name
        np.testing.assert_allclose(cpu_grads[name], grad, rtol=1e-10, atol=1e-12, err_msg=name)
