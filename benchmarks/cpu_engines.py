"""The engines of cpu_bench.py: for each (engine, case), a function that runs one
repetition (a training step, an inference, a layer's forward or forward+backward).

- tinyres and torch (eager) run the same code through their PyTorch-like APIs: a model
  (tinyres.models.get_model, or the PyTorch twin below, torchvision's layout without
  torchvision) with SGD and cross entropy, or one layer on fixed random inputs.
- torch_compile is torch eager with the model wrapped in torch.compile (inductor, the
  default backend and mode); the optimizer step stays eager. Model cases only.
- numpy (convolution cases only) is a plain NumPy im2col + matmul convolution, as a
  baseline for what the Numba kernels buy.

Every engine gets the same thread count: torch.set_num_threads, numba.set_num_threads,
and the BLAS pools through threadpoolctl.
"""
import os

MODEL_SIZES = {"resnet20": 32, "resnet18": 224, "resnet50": 224}


def conv_out(h, k, s, p):
    """Output size of a convolution: input h, kernel k, stride s, padding p."""
    return (h + 2 * p - k) // s + 1


def tiny(case):
    """The same case at a toy size: the worker's warm-up before the memory baseline."""
    small = dict(case, n=min(case["n"], 2 if case["kind"] in ("train", "infer") else 1))
    if "h" in case:
        small["h"] = small["w"] = min(case["h"], 16)
    return small


def runs_case(engine, case):
    """Whether `engine` runs `case` (numpy: convolutions; torch_compile: models)."""
    if engine == "numpy":
        return case["kind"] == "conv"
    if engine == "torch_compile":
        return case["kind"] in ("train", "infer")
    return True


def make_step(engine, case, tiny_size=False):
    """One repetition of `case` on `engine`, as a function (the worker's entry point)."""
    if engine == "tinyres" and case.get("tune"):
        import tinyres
        tinyres.runtime.tune()      # what `python -m tinyres train` does unless --no-tune
    if engine == "tinyres" and case.get("buffer_cache") is False:
        from tinyres.kernels import buffers
        buffers.enable(False)       # cpu_bench.py --no-buffer-cache
    import numpy as np
    from threadpoolctl import threadpool_limits
    threads = case.get("threads") or os.cpu_count()
    threadpool_limits(limits=threads, user_api="blas")
    if tiny_size:
        case = tiny(case)
    if not runs_case(engine, case):
        raise NotImplementedError(f"the {engine} engine does not run {case['kind']} cases")
    if engine == "tinyres":
        return make_tinyres_step(case, np, threads)
    if engine in ("torch", "torch_compile"):
        return make_torch_step(case, np, threads, compiled=engine == "torch_compile")
    if engine == "numpy":
        return make_numpy_step(case, np, threads)
    raise ValueError(f"unknown engine {engine!r}")


# ----- tinyres and torch: one recipe, two libraries ---------------------------------------
def _inputs(case, rng, np):
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]), dtype=np.float32)
    if case["kind"] != "conv":
        return x, None, None
    w = rng.standard_normal((case["oc"], case["c"], case["k"], case["k"]),
                            dtype=np.float32) * 0.1
    oh = conv_out(case["h"], case["k"], case["stride"], case["pad"])
    g = rng.standard_normal((case["n"], case["oc"], oh, oh), dtype=np.float32)
    return x, w, g


def _model_step(lib, F, model, case, np):
    """A training step (SGD with momentum, cross entropy) or an inference under no_grad."""
    rng = np.random.default_rng(0)
    size = case.get("size") or MODEL_SIZES[case["model"]]
    x = lib.tensor(rng.standard_normal((case["n"], 3, size, size), dtype=np.float32))
    y = lib.tensor(rng.integers(0, 10, case["n"]))
    if case["kind"] == "infer":
        model.eval()

        def infer():
            with lib.no_grad():
                model(x)
        return infer
    opt = lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return train


def _layer_step(lib, F, case, np):
    """One layer's forward (with autograd recording) or forward+backward."""
    rng = np.random.default_rng(0)
    x_np, w_np, g_np = _inputs(case, rng, np)
    x = lib.tensor(x_np, requires_grad=True)
    kind, c = case["kind"], case["c"]
    if kind == "conv":
        w, g = lib.tensor(w_np, requires_grad=True), lib.tensor(g_np)

        def run():
            return F.conv2d(x, w, None, case["stride"], case["pad"])
    elif kind == "batchnorm":
        g = lib.tensor(rng.standard_normal(x_np.shape, dtype=np.float32))
        rm, rv = lib.zeros(c), lib.ones(c)
        wt, b = lib.ones(c, requires_grad=True), lib.zeros(c, requires_grad=True)

        def run():
            return F.batch_norm(x, rm, rv, wt, b, True, 0.1, 1e-5)
    else:
        g = lib.tensor(rng.standard_normal(x_np.shape, dtype=np.float32))

        def run():
            return F.relu(x)
    if case["op"] == "fwd":
        return run

    def step():
        x.grad = None
        run().backward(g)
    return step


def make_tinyres_step(case, np, threads):
    """tinyres's step for `case`, Numba held to `threads` threads."""
    import numba
    import tinyres
    import tinyres.nn.functional as F
    from tinyres.models import get_model
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    if case["kind"] in ("train", "infer"):
        model = get_model(case["model"])
        if case.get("fold"):
            from tinyres.nn.utils.fusion import fold_batchnorm
            model = fold_batchnorm(model.eval())
        return _model_step(tinyres, F, model, case, np)
    return _layer_step(tinyres, F, case, np)


def make_torch_step(case, np, threads, compiled=False):
    """torch's step for `case`, eager or with the model under torch.compile."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if case["kind"] in ("train", "infer"):
        model = torch_model(case["model"])
        if case.get("fold"):
            from torch.fx.experimental.optimization import fuse
            model = fuse(model.eval())
        return _model_step(torch, F, torch.compile(model) if compiled else model, case, np)
    return _layer_step(torch, F, case, np)


# ----- numpy: im2col + matmul --------------------------------------------------------------
def numpy_im2col(x, kh, kw, s, p, np):
    """(N, C*kh*kw, OH*OW) columns of x: np.pad, then a strided window view, then a copy."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::s, ::s]
    oh, ow = win.shape[2:4]
    return win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, oh * ow), oh, ow


def numpy_col2im(cols, x_shape, kh, kw, s, p, oh, ow, np):
    """The adjoint of numpy_im2col: add each kernel offset's columns back, one loop step
    per offset."""
    n, c, h, w = x_shape
    dx = np.zeros((n, c, h + 2 * p, w + 2 * p), dtype=cols.dtype)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i:i + s * oh:s, j:j + s * ow:s] += cols[:, :, i, j]
    return dx[:, :, p:p + h, p:p + w]


def make_numpy_step(case, np, threads):
    if case["kind"] != "conv":
        raise NotImplementedError("the numpy engine only runs convolution cases")
    x, w, g = _inputs(case, np.random.default_rng(0), np)
    k, s, p = case["k"], case["stride"], case["pad"]
    w2 = w.reshape(w.shape[0], -1)

    def forward():
        cols, oh, ow = numpy_im2col(x, k, k, s, p, np)
        return np.matmul(w2, cols).reshape(x.shape[0], -1, oh, ow), cols, oh, ow

    if case["op"] == "fwd":
        return forward

    def step():
        _, cols, oh, ow = forward()
        g3 = g.reshape(g.shape[0], g.shape[1], -1)
        grad_w = np.matmul(g3, cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
        grad_x = numpy_col2im(np.matmul(w2.T, g3), x.shape, k, k, s, p, oh, ow, np)
        return grad_w, grad_x
    return step


# ----- PyTorch twins of the models (torchvision layout; torchvision not needed) ----------
def torch_model(name):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, inp, planes, stride, shortcut):
            super().__init__()
            self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut, self.stride, self.extra = shortcut, stride, planes - inp
            if shortcut == "B" and (stride != 1 or inp != planes):
                self.downsample = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes))
            else:
                self.downsample = None

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            identity = x
            if self.downsample is not None:
                identity = self.downsample(x)
            elif self.stride != 1 or self.extra:       # option A: subsample, zero-pad
                e = self.extra
                identity = nn.functional.pad(x[:, :, ::self.stride, ::self.stride],
                                             (0, 0, 0, 0, e // 2, e - e // 2))
            return torch.relu(out + identity)

    def stages(inp, widths, counts, strides, shortcut):
        layers = []
        for planes, count, stride in zip(widths, counts, strides):
            for i in range(count):
                layers.append(Block(inp, planes, stride if i == 0 else 1, shortcut))
                inp = planes
        return nn.Sequential(*layers)

    if name == "resnet20":
        return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                             nn.ReLU(), stages(16, (16, 32, 64), (3, 3, 3), (1, 2, 2), "A"),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    if name == "resnet18":
        return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                             nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                             stages(64, (64, 128, 256, 512), (2, 2, 2, 2), (1, 2, 2, 2), "B"),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))
    if name == "resnet50":
        raise NotImplementedError("resnet50 runs through conv_bench's torchvision-free twin")
    raise ValueError(name)


