"""tinyres beside PyTorch on the CPU: per layer (convolution, batch norm, ReLU) and whole
models (training step, inference), same shapes, same thread count.

Each engine runs in its own worker process, one per (engine, case), and the engines
alternate over rounds (see benchmarks/_timing.py for why and for the memory figure).
A round is `--warmup` untimed repetitions then `--reps` timed ones; the table shows the
median over every timed repetition of every round.

Columns:
  case           the layer or model; N x C x H x W is the input, "fwd" a forward pass
                 with autograd recording (as in training), "fwd+bwd" forward and backward
  <engine> ms    median wall time of one repetition
  ratio          tinyres ms / torch ms (above 1: tinyres is slower)
  <engine> GF/s  convolution (and fc) FLOPs per second; a forward conv counts
                 2*N*OC*OH*OW*C*kh*kw, its backward twice that; "-" for batch norm / ReLU
  <engine> MB    growth of the worker's peak RSS over the case (see _timing.py)

    python benchmarks/cpu_bench.py                     # everything (about 10 minutes)
    python benchmarks/cpu_bench.py --quick             # a small subset (about 1-2 minutes)
    python benchmarks/cpu_bench.py --cases 'r20 conv' --engines tinyres,numpy,torch
    python benchmarks/cpu_bench.py --json benchmarks/results/cpu.json --rounds 5 --reps 5

The "numpy" engine (convolution cases only) is a plain NumPy im2col + matmul convolution,
written below, as a baseline for what the Numba kernels buy.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402

ENGINES = ("tinyres", "torch", "numpy")


# ----- the convolutions of each model ---------------------------------------------------
def conv_out(h, k, s, p):
    return (h + 2 * p - k) // s + 1


def _conv(n, c, h, oc, k, s, p):
    return {"n": n, "c": c, "h": h, "w": h, "oc": oc, "k": k, "stride": s, "pad": p}


def model_convs(model, n):
    """Every convolution of `model` at batch n, in order (repeats included), and its fc
    as (in_features, out_features)."""
    convs = []
    if model == "resnet20":
        convs.append(_conv(n, 3, 32, 16, 3, 1, 1))
        inplanes, h = 16, 32
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                s = stride if i == 0 else 1
                convs.append(_conv(n, inplanes, h, planes, 3, s, 1))
                h = conv_out(h, 3, s, 1)
                convs.append(_conv(n, planes, h, planes, 3, 1, 1))
                inplanes = planes
        return convs, (64, 10)
    if model in ("resnet18", "resnet50"):
        convs.append(_conv(n, 3, 224, 64, 7, 2, 3))
        inplanes, h = 64, 56
        bottleneck = model == "resnet50"
        blocks = (3, 4, 6, 3) if bottleneck else (2, 2, 2, 2)
        expansion = 4 if bottleneck else 1
        for planes, count, stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2)):
            for i in range(count):
                s = stride if i == 0 else 1
                ho = conv_out(h, 3, s, 1)
                if bottleneck:
                    convs.append(_conv(n, inplanes, h, planes, 1, 1, 0))
                    convs.append(_conv(n, planes, h, planes, 3, s, 1))
                    convs.append(_conv(n, planes, ho, planes * 4, 1, 1, 0))
                else:
                    convs.append(_conv(n, inplanes, h, planes, 3, s, 1))
                    convs.append(_conv(n, planes, ho, planes, 3, 1, 1))
                if s != 1 or inplanes != planes * expansion:
                    convs.append(_conv(n, inplanes, h, planes * expansion, 1, s, 0))
                inplanes, h = planes * expansion, ho
        return convs, (inplanes, 1000)
    raise ValueError(model)


def conv_flops(cv):
    oh = conv_out(cv["h"], cv["k"], cv["stride"], cv["pad"])
    ow = conv_out(cv["w"], cv["k"], cv["stride"], cv["pad"])
    return 2 * cv["n"] * cv["oc"] * oh * ow * cv["c"] * cv["k"] * cv["k"]


def model_forward_flops(model, n):
    convs, (fin, fout) = model_convs(model, n)
    return sum(conv_flops(cv) for cv in convs) + 2 * n * fin * fout


def conv_name(prefix, cv):
    return (f"{prefix} conv{cv['k']}x{cv['k']}/s{cv['stride']} {cv['c']}->{cv['oc']} "
            f"{cv['n']}x{cv['c']}x{cv['h']}x{cv['w']}")


def distinct(convs):
    seen, out = set(), []
    for cv in convs:
        key = tuple(sorted(cv.items()))
        if key not in seen:
            seen.add(key)
            out.append(cv)
    return out


def conv_cases(prefix, convs, ops=("fwd", "fwd+bwd")):
    return [{"name": f"{conv_name(prefix, cv)} {op}", "kind": "conv", "op": op,
             "flops": conv_flops(cv) * (1 if op == "fwd" else 3), **cv}
            for cv in convs for op in ops]


def pointwise_cases(prefix, convs):
    """Batch norm and ReLU forward+backward on each distinct conv output shape."""
    shapes = []
    for cv in convs:
        oh = conv_out(cv["h"], cv["k"], cv["stride"], cv["pad"])
        if (cv["n"], cv["oc"], oh) not in shapes:
            shapes.append((cv["n"], cv["oc"], oh))
    return [{"name": f"{prefix} {kind} {n}x{c}x{h}x{h} fwd+bwd", "kind": kind,
             "op": "fwd+bwd", "n": n, "c": c, "h": h, "w": h, "flops": None}
            for kind in ("batchnorm", "relu") for n, c, h in shapes]


def model_case(model, mode, n):
    flops = model_forward_flops(model, n) * (3 if mode == "train" else 1)
    return {"name": f"{model} {mode} step batch {n}", "kind": mode, "model": model,
            "n": n, "flops": flops}


def layer_convs():
    r20 = [_conv(128, 16, 32, 16, 3, 1, 1), _conv(128, 32, 16, 32, 3, 1, 1),
           _conv(128, 64, 8, 64, 3, 1, 1), _conv(128, 16, 32, 32, 3, 2, 1),
           _conv(128, 32, 16, 64, 3, 2, 1)]
    r18 = [_conv(16, 3, 224, 64, 7, 2, 3)]
    r18 += [_conv(16, c, h, c, 3, 1, 1) for c, h in ((64, 56), (128, 28), (256, 14), (512, 7))]
    r18 += [_conv(16, c, h, 2 * c, 1, 2, 0) for c, h in ((64, 56), (128, 28), (256, 14))]
    return r20, r18


def all_cases():
    r20, r18 = layer_convs()
    return (conv_cases("r20", r20) + pointwise_cases("r20", r20)
            + conv_cases("r18", r18) + pointwise_cases("r18", r18)
            + [model_case("resnet20", "train", 128), model_case("resnet20", "infer", 128),
               model_case("resnet18", "train", 16)])


def quick_cases():
    r20, _ = layer_convs()
    return (conv_cases("r20", r20[:1]) + pointwise_cases("r20", r20[:1])
            + [model_case("resnet20", "train", 128), model_case("resnet20", "infer", 128)])


def tiny(case):
    """The same case at a toy size: the worker's warm-up before the memory baseline."""
    small = dict(case, n=min(case["n"], 2 if case["kind"] in ("train", "infer") else 1))
    if "h" in case:
        small["h"] = small["w"] = min(case["h"], 16)
    return small


# ----- the engines ------------------------------------------------------------------------
def _inputs(case, rng, np):
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]), dtype=np.float32)
    if case["kind"] != "conv":
        return x, None, None
    w = rng.standard_normal((case["oc"], case["c"], case["k"], case["k"]),
                            dtype=np.float32) * 0.1
    oh = conv_out(case["h"], case["k"], case["stride"], case["pad"])
    g = rng.standard_normal((case["n"], case["oc"], oh, oh), dtype=np.float32)
    return x, w, g


def make_tinyres_step(case, np, threads):
    import numba
    import tinyres
    import tinyres.nn.functional as F
    from tinyres.models import get_model
    numba.set_num_threads(threads)
    rng = np.random.default_rng(0)
    kind = case["kind"]
    if kind in ("train", "infer"):
        model = get_model(case["model"])
        size = 32 if case["model"] == "resnet20" else 224
        x = tinyres.tensor(rng.standard_normal((case["n"], 3, size, size), dtype=np.float32))
        y = tinyres.tensor(rng.integers(0, 10, case["n"]))
        if kind == "infer":
            model.eval()

            def step():
                with tinyres.no_grad():
                    model(x)
            return step
        opt = tinyres.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return step
    x_np, w_np, g_np = _inputs(case, rng, np)
    x = tinyres.Tensor(x_np, requires_grad=True)
    if kind == "conv":
        w = tinyres.Tensor(w_np, requires_grad=True)
        g = tinyres.Tensor(g_np)

        def run():
            return F.conv2d(x, w, None, case["stride"], case["pad"])
    else:
        c = case["c"]
        g = tinyres.Tensor(rng.standard_normal(x_np.shape, dtype=np.float32))
        if kind == "batchnorm":
            rm, rv = tinyres.zeros(c), tinyres.ones(c)
            wt, b = tinyres.ones(c, requires_grad=True), tinyres.zeros(c, requires_grad=True)

            def run():
                return F.batch_norm(x, rm, rv, wt, b, True, 0.1, 1e-5)
        else:
            def run():
                return F.relu(x)
    if case["op"] == "fwd":
        return run

    def step():
        x.grad = None
        run().backward(g)
    return step


def make_torch_step(case, np, threads):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    kind = case["kind"]
    if kind in ("train", "infer"):
        model = torch_model(case["model"])
        size = 32 if case["model"] == "resnet20" else 224
        x = torch.from_numpy(rng.standard_normal((case["n"], 3, size, size), dtype=np.float32))
        y = torch.from_numpy(rng.integers(0, 10, case["n"]))
        if kind == "infer":
            model.eval()

            def step():
                with torch.no_grad():
                    model(x)
            return step
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return step
    x_np, w_np, g_np = _inputs(case, rng, np)
    x = torch.from_numpy(x_np).requires_grad_()
    if kind == "conv":
        w = torch.from_numpy(w_np).requires_grad_()
        g = torch.from_numpy(g_np)

        def run():
            return F.conv2d(x, w, None, case["stride"], case["pad"])
    else:
        c = case["c"]
        g = torch.from_numpy(rng.standard_normal(x_np.shape, dtype=np.float32))
        if kind == "batchnorm":
            rm, rv = torch.zeros(c), torch.ones(c)
            wt, b = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)

            def run():
                return F.batch_norm(x, rm, rv, wt, b, True, 0.1, 1e-5)
        else:
            def run():
                return F.relu(x)
    if case["op"] == "fwd":
        return run

    def step():
        x.grad = None
        run().backward(g)
    return step


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


def make_step(engine, case, tiny_size=False):
    """One repetition of `case` on `engine`, as a function (the worker's entry point)."""
    if engine == "tinyres" and case.get("tune"):
        import tinyres
        tinyres.runtime.tune()      # what `python -m tinyres train` does unless --no-tune
    import numpy as np
    threads = case.get("threads") or os.cpu_count()
    if tiny_size:
        case = tiny(case)
    maker = {"tinyres": make_tinyres_step, "torch": make_torch_step,
             "numpy": make_numpy_step}[engine]
    return maker(case, np, threads)


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


# ----- the parent ---------------------------------------------------------------------------
def rows_for(case, res, engines):
    """One printed row and its JSON record."""
    flops = case.get("flops")
    row = [case["name"]]
    for e in engines:
        row.append(_timing.fmt(res[e]["ms"], ".2f") if "ms" in res[e]
                   else "error" if "error" in res[e] else "-")
    t, r = res.get("tinyres", {}), res.get("torch", {})
    ratio = t["ms"] / r["ms"] if "ms" in t and "ms" in r else None
    row.append(_timing.fmt(ratio, ".2f"))
    for e in engines:
        gfs = flops / res[e]["ms"] / 1e6 if flops and "ms" in res[e] else None
        res[e]["gflops"] = gfs
        row.append(_timing.fmt(gfs, ".1f"))
    for e in engines:
        row.append(_timing.fmt(res[e].get("peak_rss_mb"), ".0f"))
    return row, {"case": case, "ratio_tinyres_torch": ratio, "results": res}


def run_table(cases, engines, rounds, reps, warmup, threads, title, tune=False):
    columns = [("case", max([len(c["name"]) for c in cases] + [40]))]
    columns += [(f"{e} ms", 10) for e in engines] + [("ratio", 6)]
    columns += [(f"{e} GF/s", 10) for e in engines] + [(f"{e} MB", 8) for e in engines]
    print(f"\n{title}  (ratio = tinyres/torch; medians over {rounds} rounds x {reps} reps "
          f"after {warmup} warm-up; {threads} threads each)")
    rows, records = [], []
    _timing.print_header(columns)
    for case in cases:
        case = dict(case, threads=threads, tune=tune)
        usable = [e for e in engines if e != "numpy" or case["kind"] == "conv"]
        res = _timing.run_case(os.path.abspath(__file__), case, usable, rounds, reps, warmup)
        res.update({e: {} for e in engines if e not in usable})
        row, record = rows_for(case, res, engines)
        _timing.print_row(columns, row)
        rows.append(row)
        records.append(record)
    return records


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small subset, few repetitions")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--cases", metavar="PATTERN", help="regular expression on case names")
    ap.add_argument("--engines", default="tinyres,torch",
                    help="comma-separated, from tinyres, torch, numpy (default tinyres,torch)")
    ap.add_argument("--rounds", type=int, help="alternating rounds per engine (default 3)")
    ap.add_argument("--reps", type=int, help="timed repetitions per round (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed repetitions per round")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for every engine (default: all cores)")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    ap.add_argument("--tune", action="store_true",
                    help="tinyres's workers call tinyres.runtime.tune() first (malloc and "
                         "Numba thread-pool settings); without it tinyres runs untuned")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        _timing.serve(spec, make_step)
        return
    cases = _timing.select(quick_cases() if args.quick else all_cases(), args.cases)
    if args.list:
        print("\n".join(c["name"] for c in cases))
        return
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        if e not in ENGINES:
            ap.error(f"unknown engine {e!r}")
    rounds = args.rounds or (2 if args.quick else 3)
    reps = args.reps or (2 if args.quick else 3)
    info = _timing.machine_info()
    print("\n".join(_timing.header_lines(info)))
    print("memory: growth of each worker's peak RSS (VmHWM) over the case, one fresh "
          "process per (engine, case)")
    records = run_table(cases, engines, rounds, reps, args.warmup, args.threads,
                        "CPU, float32" + (", tinyres tuned" if args.tune else ""), args.tune)
    if args.json:
        _timing.write_json(args.json, {"machine": info, "rounds": rounds, "reps": reps,
                                       "warmup": args.warmup, "threads": args.threads,
                                       "tinyres_tuned": args.tune,
                                       "engines": engines, "rows": records})


if __name__ == "__main__":
    main()
