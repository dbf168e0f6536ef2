"""The example training scripts in examples/: each runs end to end on tinyres (a few steps,
a checkpoint written and read back), and its PyTorch version, which is the same file with
only the import lines of TORCH_IMPORTS swapped, logs the same first losses in float64.

The data are scikit-learn's bundled digits upscaled and written in the real formats (MNIST
idx files, CIFAR-10 python-pickle batches), so nothing is downloaded.
"""
import difflib
import importlib.util
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyres
from tinyres.data import load_digits
from tinyres.vision.datasets import write_cifar10, write_mnist

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CIFAR_SCRIPT = EXAMPLES / "cifar_resnet.py"
MNIST_SCRIPT = EXAMPLES / "mnist_cnn.py"
TIMEOUT_S = 300

# Each tinyres import line of the examples and the PyTorch line it stands for: the only
# lines in which the two versions of a script differ.
TORCH_IMPORTS = {
    "import tinyres as torch": "import torch",
    "import tinyres.nn as nn": "import torch.nn as nn",
    "import tinyres.nn.functional as F": "import torch.nn.functional as F",
    "import tinyres.optim as optim": "import torch.optim as optim",
    "from tinyres.optim.lr_scheduler import StepLR": "from torch.optim.lr_scheduler import StepLR",
    "from tinyres.safetensors import load_file": "from safetensors.torch import load_file",
    "from tinyres.utils.data import DataLoader": "from torch.utils.data import DataLoader",
    "from tinyres.utils.data import DataLoader, Dataset":
        "from torch.utils.data import DataLoader, Dataset",
    "from tinyres.vision import datasets, transforms":
        "from torchvision import datasets, transforms",
}

# Runs a PyTorch script (argv[1], its flags after it). Two things stand between the PyPI
# torchvision wheel and a CPU-only torch on synthetic CIFAR files, and only those are
# bridged: the wheel's C++ ops are built against CUDA torch, so where they do not load, the
# two op schemas torchvision's import registers fake kernels for are declared (no torchvision
# op is called by these scripts); and CIFAR10 checks the official archive's MD5 sums, which
# files made from the digits cannot match, so the check becomes "the file exists".
TORCH_LAUNCHER = """
import os, runpy, sys
import torch
script = sys.argv[1]
spec = __import__("importlib.util").util.find_spec("torchvision")
if spec is not None and "from torchvision import" in open(script).read():
    try:
        torch.ops.load_library(os.path.join(os.path.dirname(spec.origin), "_C.so"))
    except OSError:
        lib = torch.library.Library("torchvision", "DEF")
        for name in ("nms", "qnms"):
            lib.define(name + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision.datasets.cifar as cifar
    cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def pytorch_source(path):
    """The PyTorch version of an example: its TORCH_IMPORTS lines replaced, nothing else."""
    lines = Path(path).read_text().splitlines(keepends=True)
    swapped = [TORCH_IMPORTS[line.rstrip("\n")] + "\n" if line.rstrip("\n") in TORCH_IMPORTS
               else line for line in lines]
    leftover = [line for line in swapped if "tinyres" in line and line.lstrip().startswith(
        ("import", "from"))]
    assert not leftover, f"{path.name}: tinyres imports with no PyTorch line: {leftover}"
    return "".join(swapped)


# ----- data: the digits in MNIST's and CIFAR-10's file formats ------------------------------

def upscale(images, size):
    """(N, 8, 8) floats in [0, 1] -> (N, size, size) uint8, nearest neighbour."""
    rows = np.arange(size) * images.shape[-1] // size
    return np.round(images[:, rows][:, :, rows] * 255).astype(np.uint8)


def write_data(root, n_train, n_test):
    """MNIST (root/MNIST/raw/) and CIFAR-10 (root/cifar-10-batches-py/) from the digits:
    the first n_train images train, the next n_test test."""
    images, labels = load_digits()
    images, labels = images[: n_train + n_test, 0], labels[: n_train + n_test]
    mnist = upscale(images, 28)
    tint = np.array([1.0, 0.75, 0.5])                       # (N, 32, 32, 3), as CIFAR's
    cifar = np.round(upscale(images, 32)[..., None] * tint).astype(np.uint8)
    for train, part in ((True, slice(0, n_train)), (False, slice(n_train, None))):
        write_mnist(root, mnist[part], labels[part], train=train)
        write_cifar10(root, cifar[part], labels[part], train=train)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A folder with MNIST/raw/ and cifar-10-batches-py/ made from the digits."""
    root = tmp_path_factory.mktemp("data")
    write_data(root, n_train=96, n_test=32)
    return root


# ----- running the scripts ---------------------------------------------------------------

def run(command, cwd):
    """Run a command with the test's Python; fail with its output if it fails."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run([sys.executable, *command], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=env)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def run_tinyres(script, args, cwd):
    """Run an example as it is (tinyres); its stdout."""
    return run([str(script), *map(str, args)], cwd)


def run_torch(script, args, cwd):
    """Run an example's PyTorch version (written next to the run); its stdout."""
    torch_script = Path(cwd) / f"torch_{script.name}"
    torch_script.write_text(pytorch_source(script))
    return run(["-c", TORCH_LAUNCHER, str(torch_script), *map(str, args)], cwd)


def example_namespace(script):
    """The example's functions and classes (its main() not run)."""
    return runpy.run_path(str(script), run_name="example")


# ----- (a) each script runs end to end on tinyres ------------------------------------------

def test_cifar_script_trains_checkpoints_and_resumes(data_root, tmp_path):
    ckpt = tmp_path / "ckpt" / "ckpt.pth"
    common = ["--data-root", data_root, "--width", 8, "--batch-size", 16, "--max-steps", 2,
              "--num-workers", 2, "--checkpoint", ckpt]
    out = run_tinyres(CIFAR_SCRIPT, [*common, "--epochs", 1], tmp_path)
    assert "Epoch: 0" in out and "test: loss" in out
    saved = tinyres.load(ckpt)
    assert saved["epoch"] == 0 and 0 <= saved["acc"] <= 100
    example = example_namespace(CIFAR_SCRIPT)
    model = example["resnet"](20, 8)
    model.load_state_dict(saved["net"])                       # strict: every key, every shape
    assert len(saved["optimizer"]["state"]) == len(list(model.parameters()))  # momentum

    # The resumed run goes on at epoch 1, and its first loss (before its first step) is
    # the checkpointed model's loss on the first batch.
    flags = [*common, "--epochs", 2, "--resume", "--no-augment", "--no-shuffle",
             "--log-losses", tmp_path / "resumed.json"]
    loader, _ = example["build_loaders"](
        example["parse_args"]([*map(str, flags), "--num-workers", "0"]))
    inputs, targets = next(iter(loader))
    model.train()
    expected = tinyres.nn.functional.cross_entropy(model(inputs), targets).item()
    out = run_tinyres(CIFAR_SCRIPT, flags, tmp_path)
    assert "Resuming" in out and "Epoch: 1" in out and "Epoch: 0" not in out
    resumed = tinyres.load(ckpt)
    assert resumed["epoch"] == 1 and resumed["scheduler"]["last_epoch"] == 2
    first = json.loads((tmp_path / "resumed.json").read_text())[0]
    assert first == pytest.approx(expected, rel=1e-5)


def test_mnist_script_trains_saves_and_resumes(data_root, tmp_path):
    common = ["--data-root", data_root, "--batch-size", 16, "--test-batch-size", 32,
              "--epochs", 1]
    run_tinyres(MNIST_SCRIPT, [*common, "--max-steps", 3, "--log-interval", 1,
                               "--save-model"], tmp_path)
    state = tinyres.load(tmp_path / "mnist_cnn.pt")
    example = example_namespace(MNIST_SCRIPT)
    model = example["Net"]((0.0, 0.0))
    fresh = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    model.load_state_dict(state)                              # strict: every key, every shape
    assert set(state) == set(fresh)
    assert not np.allclose(state["fc2.weight"].numpy(), fresh["fc2.weight"])

    # The resumed run's first loss (before its first step) is the saved model's loss.
    images, targets = zip(*(example["MNISTIdx"](data_root, train=True)[i] for i in range(16)))
    expected = tinyres.nn.functional.nll_loss(model(tinyres.stack(images)),
                                              tinyres.tensor(targets)).item()
    run_tinyres(MNIST_SCRIPT, [*common, "--max-steps", 1, "--no-shuffle", "--dropout", 0, 0,
                               "--resume", "mnist_cnn.pt", "--log-losses", "resumed.json"],
                tmp_path)
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed[0] == pytest.approx(expected, rel=1e-5)


# ----- (b) the tinyres and PyTorch versions agree step by step ------------------------------

def save_initial_weights(model, path):
    """A model's state_dict as a safetensors file, written by tinyres."""
    from tinyres.safetensors import save_file
    save_file(model.state_dict(), str(path))


def compare_losses(script, args, tmp_path):
    """Both versions with the same flags log the same five losses (relative 1e-5)."""
    ours, theirs = tmp_path / "tinyres_losses.json", tmp_path / "torch_losses.json"
    run_tinyres(script, [*args, "--log-losses", ours], tmp_path)
    run_torch(script, [*args, "--log-losses", theirs], tmp_path)
    ours, theirs = json.loads(ours.read_text()), json.loads(theirs.read_text())
    assert len(ours) == len(theirs) == 5
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert len(set(ours)) > 1                    # the steps did change the weights


def test_cifar_script_matches_pytorch_in_float64(data_root, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    init = tmp_path / "init.safetensors"
    save_initial_weights(example_namespace(CIFAR_SCRIPT)["resnet"](20, 8), init)
    compare_losses(CIFAR_SCRIPT, ["--data-root", data_root, "--width", 8, "--batch-size", 16,
                                  "--epochs", 1, "--max-steps", 5, "--num-workers", 0,
                                  "--double", "--no-augment", "--no-shuffle", "--init", init,
                                  "--checkpoint", tmp_path / "ckpt.pth"], tmp_path)


def test_mnist_script_matches_pytorch_in_float64(data_root, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    init = tmp_path / "init.safetensors"
    save_initial_weights(example_namespace(MNIST_SCRIPT)["Net"](), init)
    compare_losses(MNIST_SCRIPT, ["--data-root", data_root, "--batch-size", 16,
                                  "--test-batch-size", 32, "--epochs", 1, "--max-steps", 5,
                                  "--double", "--no-shuffle", "--dropout", 0, 0,
                                  "--init", init], tmp_path)


def import_diff(script):
    """The unified diff from the PyTorch version of `script` to the file itself."""
    theirs = pytorch_source(script).splitlines(keepends=True)
    ours = script.read_text().splitlines(keepends=True)
    return "".join(difflib.unified_diff(theirs, ours, f"pytorch/{script.name}",
                                        f"examples/{script.name}", n=0))


def test_pytorch_versions_differ_only_in_the_import_lines():
    readme = (EXAMPLES / "README.md").read_text()
    for script in (CIFAR_SCRIPT, MNIST_SCRIPT):
        ours = script.read_text().splitlines()
        theirs = pytorch_source(script).splitlines()
        assert len(ours) == len(theirs)
        changed = [(a, b) for a, b in zip(ours, theirs) if a != b]
        assert len(changed) >= 5 and all(TORCH_IMPORTS[a] == b for a, b in changed)
        assert import_diff(script) in readme, f"examples/README.md shows an old {script.name} diff"
