"""docs/pytorch.md tells the truth: every PyTorch idiom its tables mark `yes` exists in
tinyres, every one marked `no` does not, and the count it states is the tables' count.

A row's name is a PyTorch path (`torch.optim.lr_scheduler.OneCycleLR` is looked up as
`tinyres.optim.lr_scheduler.OneCycleLR`; torchvision is tinyres.vision, safetensors.torch
is tinyres.safetensors), a path with a keyword (`torch.nn.Conv2d(groups=)`: the keyword is
in the signature), or a behaviour with a probe below that runs it in tinyres.
"""
import importlib
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import tinyres

DOC = Path(__file__).resolve().parent.parent / "docs" / "pytorch.md"
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*(yes|no)\s*\|")
KEYWORD = re.compile(r"^([\w.]+)\((\w+)=\)$")
PATH = re.compile(r"^[\w.]+$")
SUMMARY = re.compile(r"\*\*(\d+) of (\d+) idioms\*\*")
PREFIXES = (("torchvision.", "tinyres.vision."), ("safetensors.torch.", "tinyres.safetensors."),
            ("torch.", "tinyres."))


def doc_rows():
    """(name, supported, counted) for every table row of the page; the rows of the
    "Left out" section are not counted in its summary."""
    rows, counted = [], True
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            counted = not line.startswith("## Left out")
        match = ROW.match(line)
        if match:
            rows.append((match.group(1), match.group(2) == "yes", counted))
    return rows


def lookup(path):
    """The tinyres object a PyTorch path names, importing submodules on the way as
    `from tinyres.a.b import c` would; raises AttributeError or ImportError if none."""
    for theirs, ours in PREFIXES:
        if path.startswith(theirs):
            path = ours + path[len(theirs):]
            break
    obj, walked = tinyres, "tinyres"
    for part in path.split(".")[1:]:
        walked += "." + part
        if hasattr(obj, part):
            obj = getattr(obj, part)
        elif inspect.ismodule(obj):
            obj = importlib.import_module(walked)
        else:
            raise AttributeError(f"{walked} does not exist")
    return obj


# ----- probes: behaviours that a name alone does not show ----------------------------------

def probe_default_collate():
    """Tuples and dicts batch as torch's default_collate does, dtypes kept."""
    from tinyres.utils.data import default_collate
    pairs = default_collate([(tinyres.tensor([1.0, 2.0], dtype=tinyres.float64), 1.5, 3)] * 4)
    dicts = default_collate([{"x": tinyres.zeros(3, dtype=tinyres.float64), "y": 2}] * 4)
    return (pairs[0].shape == (4, 2) and pairs[0].dtype == tinyres.float64
            and pairs[1].dtype == tinyres.float64 and pairs[2].dtype == tinyres.int64
            and dicts["x"].shape == (4, 3) and dicts["x"].dtype == tinyres.float64
            and dicts["y"].dtype == tinyres.int64)


def probe_shuffle_follows_manual_seed():
    """The same seed gives the same shuffled order; another seed another order."""
    from tinyres.utils.data import DataLoader

    def order(seed):
        tinyres.manual_seed(seed)
        return [int(i) for batch in DataLoader(list(range(32)), batch_size=8, shuffle=True)
                for i in batch]
    return order(1) == order(1) != order(2) and sorted(order(1)) == list(range(32))


def probe_cuda_devices_distinct():
    """cuda:1 is its own device, not folded into cuda:0."""
    first, second = tinyres.device("cuda:0"), tinyres.device("cuda:1")
    return first != second and str(second) == "cuda:1" and second.index == 1


def probe_data_is_a_tensor():
    """.data is a Tensor without history."""
    x = tinyres.ones(3, requires_grad=True)
    return isinstance(x.data, tinyres.Tensor) and not x.data.requires_grad


def conv_output_shape(**options):
    """The output shape of a 4->4 channel 3x3 Conv2d with `options` on a 7x7 input."""
    conv = tinyres.nn.Conv2d(4, 4, 3, **options)
    return tuple(conv(tinyres.randn(2, 4, 7, 7)).shape)


def probe_interpolate(mode):
    """F.interpolate doubles a 2x2 image in `mode`."""
    x = tinyres.arange(4.0).reshape(1, 1, 2, 2)
    return tuple(tinyres.nn.functional.interpolate(x, scale_factor=2, mode=mode).shape) == (
        1, 1, 4, 4)


def probe_pad_reflect():
    """F.pad(mode='reflect') mirrors without repeating the edge."""
    x = tinyres.arange(3.0).reshape(1, 1, 3)
    out = tinyres.nn.functional.pad(x, (2, 2), mode="reflect")
    return np.array_equal(out.numpy().ravel(), [2, 1, 0, 1, 2, 1, 0])


def probe_create_graph():
    """autograd.grad(create_graph=True) returns a gradient with a graph."""
    x = tinyres.ones(2, requires_grad=True)
    (grad,) = tinyres.autograd.grad((x * x).sum(), x, create_graph=True)
    return grad.requires_grad


def probe_param_groups():
    """Each param group keeps its own lr, and takes the defaults for the rest."""
    a, b = tinyres.nn.Parameter(tinyres.ones(2)), tinyres.nn.Parameter(tinyres.ones(2))
    opt = tinyres.optim.SGD([{"params": [a], "lr": 0.5}, {"params": [b]}], lr=0.1,
                            momentum=0.9)
    return ([g["lr"] for g in opt.param_groups] == [0.5, 0.1]
            and opt.param_groups[0]["momentum"] == 0.9)


PROBES = {
    "torch.utils.data.default_collate": probe_default_collate,
    "torch.utils.data.DataLoader(shuffle=True) follows torch.manual_seed":
        probe_shuffle_follows_manual_seed,
    'torch.device("cuda:1") distinct from "cuda:0"': probe_cuda_devices_distinct,
    "torch.Tensor.data": probe_data_is_a_tensor,
    "torch.nn.Conv2d(groups=)": lambda: conv_output_shape(groups=4, padding=1) == (2, 4, 7, 7),
    "torch.nn.Conv2d(dilation=)": lambda: conv_output_shape(dilation=2) == (2, 4, 3, 3),
    'torch.nn.Conv2d(padding="same")': lambda: conv_output_shape(padding="same") == (2, 4, 7, 7),
    'torch.nn.Conv2d(padding="valid")': lambda: conv_output_shape(padding="valid") == (2, 4, 5, 5),
    'torch.nn.Conv2d(padding_mode="reflect")':
        lambda: conv_output_shape(padding=1, padding_mode="reflect") == (2, 4, 7, 7),
    'torch.nn.Conv2d(padding_mode="replicate")':
        lambda: conv_output_shape(padding=1, padding_mode="replicate") == (2, 4, 7, 7),
    'torch.nn.Conv2d(padding_mode="circular")':
        lambda: conv_output_shape(padding=1, padding_mode="circular") == (2, 4, 7, 7),
    'torch.nn.functional.interpolate(mode="nearest")': lambda: probe_interpolate("nearest"),
    'torch.nn.functional.interpolate(mode="bilinear")': lambda: probe_interpolate("bilinear"),
    'torch.nn.functional.pad(mode="reflect")': probe_pad_reflect,
    "torch.optim.Optimizer.param_groups (per-group options)": probe_param_groups,
    "torch.autograd.grad(create_graph=True)": probe_create_graph,
}


def supported(name):
    """Whether tinyres has the idiom `name` (see the module docstring)."""
    try:
        if name in PROBES:
            return bool(PROBES[name]())
        keyword = KEYWORD.match(name)
        if keyword:
            return keyword.group(2) in inspect.signature(lookup(keyword.group(1))).parameters
        lookup(name)
        return True
    except Exception:       # any failure to find or run it: not supported
        return False


# ----- the tests ----------------------------------------------------------------------------

ROWS = [(name, marked) for name, marked, _ in doc_rows()]
COUNTED = [(name, marked) for name, marked, counted in doc_rows() if counted]


def test_the_page_has_the_issue_tables():
    names = [name for name, _ in ROWS]
    assert len(names) >= 150 and len(set(names)) == len(names)
    assert len(COUNTED) >= 150
    for name in ("torch.utils.data.DataLoader", "torch.save", "torch.device",
                 "torch.nn.ConvTranspose2d", "torch.nn.LayerNorm",
                 "torch.nn.BCEWithLogitsLoss(reduction=)",
                 "torch.einsum", "torch.Tensor.view_as", "torch.optim.Adadelta",
                 "torch.optim.lr_scheduler.OneCycleLR", "torch.nn.utils.clip_grad_norm_",
                 "torch.autograd.grad"):
        assert name in names


@pytest.mark.parametrize("name", [name for name, _ in ROWS])
def test_each_row_is_checkable(name):
    assert name in PROBES or KEYWORD.match(name) or PATH.match(name), (
        f"{name!r} is neither a path, a path(keyword=) nor a probed behaviour")


@pytest.mark.parametrize("name,marked", ROWS)
def test_each_row_says_what_tinyres_has(name, marked):
    assert supported(name) == marked, (
        f"docs/pytorch.md marks {name!r} {'yes' if marked else 'no'}, but tinyres "
        f"{'does not have' if marked else 'has'} it")


def test_the_summary_counts_the_table():
    counts = SUMMARY.findall(DOC.read_text())
    assert counts, "the page states no '**N of M idioms**'"
    yes = sum(marked for _, marked in COUNTED)
    assert all((int(n), int(m)) == (yes, len(COUNTED)) for n, m in counts)
    assert len(COUNTED) < len(ROWS)          # the left-out rows are there, not counted


def test_the_lookup_tells_present_from_absent():
    assert supported("torch.optim.SGD") and supported("torch.nn.Conv2d(stride=)")
    assert not supported("torch.optim.NoSuchOptimizer")
    assert not supported("torch.nn.Conv2d(no_such_keyword=)")
    assert lookup("torch.nn.functional.relu") is tinyres.nn.functional.relu
