"""Roofline cost model of one resnet50 training step (batch 64, 224x224, float32) as
tinyres runs it on a GPU: every kernel and GEMM the step launches, its bytes and FLOPs,
its predicted time on an H100 SXM and an H200, its share of the step, and the launches.

What tinyres runs (kernels/nchw_conv.py, kernels/cuda.py, tinyres/optim/sgd.py):
  conv forward   im2col per image (N, C*kh*kw, OH*OW), one batched GEMM w2 @ cols that
                 writes NCHW; a 1x1 layer: the GEMM on x itself (stride 1) or on one copy
                 of its subsample (stride 2), no kernel of ours
  conv backward  w2^T copied (weight-sized); batched GEMM w2^T @ grad_out (a view of NCHW),
                 col2im from the per-image columns into NCHW (a 1x1 layer: the GEMM writes
                 grad_x, or, stride 2, a zero fill and a strided scatter); grad_out copied
                 channels first, the columns rebuilt batch-wide by the same im2col (a 1x1
                 layer: x, or its subsample, copied channels first), one 2-D GEMM to grad_w
                 (the stem: no grad_x); a 1x1 layer on 56x56 or 28x28 images instead:
                 one copy putting the pixels first, a same-batch batched GEMM into
                 per-image partials, their sum (nchw_conv.pointwise_partials picks by
                 bytes). The columns are made in chunks of images that fit
                 nchw_conv.COLS_BUDGET: one chunk for every layer at batch 64.
  A batched GEMM with the weight shared by the images (batch stride 0) is, in CuPy 14,
  cublas<t>gemmBatched on pointer arrays that three small kernels fill first: 4 launches
  (BATCHED_GEMM_LAUNCHES). --layout channels-first models the route before it
  (kernels/gemm_conv.py: the whole batch's columns, one GEMM writing channels first,
  copies to and from NCHW around every GEMM); the default is --layout nchw.
  batch norm     two-stage statistics: stage 1 (S blocks per channel, one pass over x,
                 Welford partials), stage 2 (combines them into mean, var, invstd); apply
                 (reads x, writes y); 6 tiny ops for the running statistics; backward:
                 two-stage reduce (reads g, x; partials, combine), apply (g, x -> grad_x)
  relu           forward reads x writes y; backward reads g and x, writes grad_x
  max-pool       forward writes y and an int64 index; backward reads g and idx
  residual add   forward reads two, writes one; backward accumulates the shortcut's
                 gradient into the block input's (+=)
  SGD step       momentum 0.9, weight decay 1e-4: fused=True, one multi-tensor launch
                 for the group (kernels/cuda/optim.cu: reads p, grad, buf, writes p, buf),
                 or per tensor (--optimizer per-tensor): seven elementwise ops per parameter
A kernel's time is the roofline bound max(bytes / bandwidth, FLOPs / peak): bytes are the
compulsory traffic (each operand read once, each result written once), so every prediction
is a lower bound a kernel can approach but not beat. A GEMM's peak is FP32 (CUDA cores) in
strict mode, TF32 (tensor cores, dense) with --tf32. Every launch also costs host time
(LAUNCH_US, an assumption for a CuPy launch from Python); the step cannot be faster than
the launches' host time either.

Published figures (dense, no sparsity):
  H100 SXM5 80 GB  HBM3 3.35 TB/s, FP32 67 TFLOPS, TF32 tensor 494.7 TFLOPS
                   (NVIDIA H100 Tensor Core GPU datasheet)
  H200 SXM 141 GB  HBM3e 4.8 TB/s, FP32 67 TFLOPS, TF32 tensor 494.7 TFLOPS
                   (NVIDIA H200 Tensor Core GPU datasheet; 989 TFLOPS there is with sparsity)

    python benchmarks/gpu_model.py [--tf32] [--layout nchw|channels-first]
                                   [--optimizer fused|per-tensor] [--json out.json]

prints the per-kernel table of the chosen route, then the step before (channels-first
convolutions, SGD per tensor) and after (NCHW convolutions, fused SGD), predicted time and
launches.
"""
import argparse
import collections
import json
import sys

from tinyres.kernels import cuda, nchw_conv

GPUS = {
    "H100 SXM": {"bandwidth": 3.35e12, "fp32": 67e12, "tf32": 494.7e12},
    "H200": {"bandwidth": 4.8e12, "fp32": 67e12, "tf32": 494.7e12},
}
LAUNCH_US = 5.0          # host time per kernel launch from Python through CuPy (assumed)
F32 = 4
BN_TINY_OPS = 6          # running_mean and running_var: *= (1 - momentum), a scaling, +=
SGD_OPS = 7              # wd*p, g+wd*p, buf*=m, (1-d)*g, buf+=, lr*buf, p-= (sgd.py)
SGD_TRAFFIC = 16         # parameter-sized reads + writes of those seven ops
SGD_FUSED_TRAFFIC = 5    # fused: p, grad and buf read once, p and buf written once
SGD_FUSED_LAUNCHES = 1   # one group, one dtype: one launch (fused_optim.py; its three
                         # small address tables are host-to-device copies, not launches)
OPTIMIZERS = ("fused", "per-tensor")
BATCHED_GEMM_LAUNCHES = 4   # CuPy's broadcast matmul: 3 pointer-array kernels + gemmBatched
LAYOUTS = ("nchw", "channels-first")
# Host reads inside one step: none. The label checks run on the device and are read at the
# next host read (tinyres.host_sync), train.py reads its totals once per epoch;
# tests/test_host_syncs.py counts 0 for a resnet20 step.
HOST_SYNCS = {}


def conv_out(h, k, s, p):
    return (h + 2 * p - k) // s + 1


def resnet50_convs(n=64):
    """[(name, dict(n, c, h, oc, k, s, p))] of resnet50 in order (torchvision layout)."""
    convs = [("conv1", dict(n=n, c=3, h=224, oc=64, k=7, s=2, p=3))]
    inplanes, h = 64, 56
    for stage, (planes, blocks, stride) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3),
                                                         (1, 2, 2, 2)), start=1):
        for b in range(blocks):
            s = stride if b == 0 else 1
            ho = conv_out(h, 3, s, 1)
            pre = f"layer{stage}.{b}"
            convs += [(f"{pre}.conv1", dict(n=n, c=inplanes, h=h, oc=planes, k=1, s=1, p=0)),
                      (f"{pre}.conv2", dict(n=n, c=planes, h=h, oc=planes, k=3, s=s, p=1)),
                      (f"{pre}.conv3", dict(n=n, c=planes, h=ho, oc=4 * planes, k=1, s=1,
                                            p=0))]
            if b == 0:
                convs.append((f"{pre}.downsample",
                              dict(n=n, c=inplanes, h=h, oc=4 * planes, k=1, s=s, p=0)))
            inplanes, h = 4 * planes, ho
    return convs


def item(layer, kernel, nbytes, flops=0, gemm=False, launches=1):
    return dict(layer=layer, kernel=kernel, bytes=nbytes, flops=flops, gemm=gemm,
                launches=launches)


def conv_items(name, cv, need_x=True, layout="nchw"):
    """The kernels and GEMMs of one convolution's forward and backward, in `layout`."""
    if layout == "channels-first":
        return conv_items_channels_first(name, cv, need_x)
    n, c, h, oc, k, s, p = (cv[key] for key in "n c h oc k s p".split())
    oh = conv_out(h, k, s, p)
    x, big_k, pixels = n * c * h * h, c * k * k, n * oh * oh
    cols, out, w = big_k * pixels, oc * pixels, oc * big_k
    gemm = 2 * oc * big_k * pixels
    rows = (pointwise_items(name, n, c, oc, h, s, need_x) if (k, p) == (1, 0) else
            unfolded_items(name, x, cols, out, w, gemm, n, need_x))
    return rows, (n, oc, oh)


def chunks_of(n, cols):
    """How many chunks of images the columns (cols values, n images) are made in."""
    return len(nchw_conv.chunks(n, F32 * cols // n, nchw_conv.COLS_BUDGET))


def unfolded_items(name, x, cols, out, w, gemm, n, need_x):
    """A layer with im2col (any window but 1x1 unpadded), per-image columns."""
    m = chunks_of(n, cols)
    rows = [item(name, "fwd im2col", F32 * (x + cols), launches=m),
            item(name, "fwd GEMM w2 @ cols", F32 * (w + cols + out), gemm, True,
                 launches=BATCHED_GEMM_LAUNCHES * m)]
    if need_x:
        rows += [item(name, "bwd copy w2^T", F32 * 2 * w),
                 item(name, "bwd GEMM w2^T @ g3", F32 * (w + out + cols), gemm, True,
                      launches=BATCHED_GEMM_LAUNCHES * m),
                 item(name, "bwd col2im", F32 * (cols + x), launches=m)]
    rows += [item(name, "bwd copy grad_out channels-first", F32 * 2 * out),
             item(name, "bwd im2col (rebuilt)", F32 * (x + cols), launches=m),
             item(name, "bwd GEMM g2 @ cols^T", F32 * (out + cols + w), gemm, True, launches=m)]
    if m > 1:
        rows.append(item(name, "bwd grad_w accumulate", F32 * 3 * w * (m - 1), launches=m - 1))
    return rows


def pointwise_items(name, n, c, oc, h, s, need_x):
    """A 1x1 unpadded layer: no im2col. xs = the subsample's size (x for stride 1); a
    strided copy reads every s-th row in full (32-byte sectors), s*xs values."""
    o = conv_out(h, 1, s, 0)
    x, xs, out, w = n * c * h * h, n * c * o * o, n * oc * o * o, oc * c
    gemm, read, rows = 2 * oc * c * n * o * o, s * xs, []
    if s > 1:
        rows.append(item(name, "fwd copy x subsample", F32 * (read + xs)))
    rows.append(item(name, "fwd GEMM w2 @ x", F32 * (w + xs + out), gemm, True,
                     launches=BATCHED_GEMM_LAUNCHES))
    if need_x:
        rows += [item(name, "bwd copy w2^T", F32 * 2 * w),
                 item(name, "bwd GEMM w2^T @ g3", F32 * (w + out + xs), gemm, True,
                      launches=BATCHED_GEMM_LAUNCHES)]
        if s > 1:
            rows += [item(name, "bwd zero grad_x", F32 * x),
                     item(name, "bwd scatter grad_x", F32 * (xs + read))]
    if nchw_conv.pointwise_partials(n, c, oc, o * o, s > 1):   # option B
        copy = ("x pixels-first", read + xs) if s > 1 or c <= oc else (
            "grad_out pixels-first", 2 * out)
        return rows + [
            item(name, f"bwd copy {copy[0]}", F32 * copy[1]),
            item(name, "bwd GEMM per-image partials", F32 * (out + xs + n * w), gemm, True),
            item(name, "bwd sum partials into grad_w", F32 * (n * w + 3 * w), launches=3)]
    return rows + [item(name, "bwd copy grad_out channels-first", F32 * 2 * out),   # option A
                   item(name, "bwd copy x channels-first", F32 * (read + xs)),
                   item(name, "bwd GEMM g2 @ x^T", F32 * (out + xs + w), gemm, True)]


def conv_items_channels_first(name, cv, need_x=True):
    """The kernels and GEMMs of one convolution's forward and backward, the route before
    the NCHW one (kernels/gemm_conv.py: whole-batch columns, copies around each GEMM)."""
    n, c, h, oc, k, s, p = (cv[key] for key in "n c h oc k s p".split())
    oh = conv_out(h, k, s, p)
    x, big_k, cols_n = n * c * h * h, c * k * k, n * oh * oh
    cols, out, w = big_k * cols_n, oc * cols_n, oc * big_k
    pointwise = (k, s, p) == (1, 1, 0)
    unfold = ("copy x channels-first", 2 * x) if pointwise else ("im2col", x + cols)
    gemm = 2 * oc * big_k * cols_n
    rows = [item(name, f"fwd {unfold[0]}", F32 * unfold[1]),
            item(name, "fwd GEMM w2 @ cols", F32 * (w + cols + out), gemm, True),
            item(name, "fwd copy out to NCHW", F32 * 2 * out),
            item(name, "bwd copy grad_out channels-first", F32 * 2 * out)]
    if need_x:
        rows += [item(name, "bwd GEMM w2^T @ g2", F32 * (w + out + cols), gemm, True),
                 item(name, "bwd copy grad_x to NCHW" if pointwise else "bwd col2im",
                      F32 * (2 * x if pointwise else cols + x))]
    rows += [item(name, f"bwd {unfold[0]} (rebuilt)", F32 * unfold[1]),
             item(name, "bwd GEMM g2 @ cols^T", F32 * (out + cols + w), gemm, True)]
    return rows, (n, oc, oh)


def bn_slices(n, c, hw):
    """S, the stage-1 blocks per channel of the batch-norm reductions (kernels/cuda.py)."""
    (slices, _), _ = cuda.Launchers(None, None).reduction_geometry(n, c, hw)
    return slices


def bn_relu_items(name, shape, relu=True):
    """Batch norm's kernels, fused with the ReLU after it where there is one (the models'
    bn_relu: one apply writing max(bn, 0), the backward's mask read from y)."""
    n, c, h = shape
    e = n * c * h * h
    partials = c * bn_slices(n, c, h * h)
    what = "bn+relu" if relu else "bn"
    return [item(name, "bn stats (stage 1)", F32 * (e + 3 * partials)),
            item(name, "bn stats combine (stage 2)", F32 * (3 * partials + 3 * c)),
            item(name, f"{what} apply", F32 * 2 * e),
            item(name, "bn running-stat ops", F32 * 3 * c * BN_TINY_OPS, launches=BN_TINY_OPS),
            item(name, f"{what} bwd reduce (stage 1)",
                 F32 * ((3 if relu else 2) * e + 2 * partials)),
            item(name, "bn bwd combine (stage 2)", F32 * (2 * partials + 2 * c)),
            item(name, f"{what} bwd apply", F32 * (4 if relu else 3) * e)]


def step_items(n=64, params=None, layout="nchw", optimizer="fused"):
    """Every kernel and GEMM of one training step, the convolutions in `layout`, the SGD
    step `optimizer` (fused or per-tensor)."""
    rows, shapes = [], {}
    for name, cv in resnet50_convs(n):
        conv, shape = conv_items(name, cv, need_x=name != "conv1", layout=layout)
        shapes[name] = shape
        last = name.endswith(("conv3", "downsample"))
        rows += conv + bn_relu_items(name, shape, relu=not last)
        if name.endswith("conv3"):
            e = shape[0] * shape[1] * shape[2] ** 2
            rows += [item(name, "residual add + relu fwd", F32 * 5 * e, launches=2),
                     item(name, "residual relu bwd + grad accumulate", F32 * 6 * e,
                          launches=2)]
    e_in, e_out = n * 64 * 112 * 112, n * 64 * 56 * 56
    rows += [item("maxpool", "maxpool fwd", F32 * e_in + 3 * F32 * e_out),
             item("maxpool", "maxpool bwd", 3 * F32 * e_out + F32 * e_in),
             item("avgpool+fc", "avgpool fwd+bwd", F32 * 2 * n * 2048 * 49, launches=2),
             item("avgpool+fc", "fc GEMMs fwd+bwd", F32 * 3 * (2048 * 1000 + n * 3048),
                  3 * 2 * n * 2048 * 1000, True, launches=3),
             item("loss", "cross-entropy fwd+bwd", F32 * 6 * n * 1000, launches=10)]
    params = params if params is not None else parameter_count(n)
    rows.append(optimizer_item(params, optimizer))
    return rows


def optimizer_item(params, optimizer):
    """The SGD step (momentum, weight decay) over params = (scalars, tensors)."""
    if optimizer == "fused":
        return item("optimizer", "SGD step, fused (momentum, weight decay)",
                    F32 * SGD_FUSED_TRAFFIC * params[0], launches=SGD_FUSED_LAUNCHES)
    return item("optimizer", "SGD step, per tensor (momentum, weight decay)",
                F32 * SGD_TRAFFIC * params[0], launches=SGD_OPS * params[1])


def parameter_count(n=64):
    """(scalars, tensors) of resnet50: conv weights, batch-norm weight and bias, fc."""
    scalars = tensors = 0
    for _, cv in resnet50_convs(n):
        scalars += cv["oc"] * cv["c"] * cv["k"] ** 2 + 2 * cv["oc"]
        tensors += 3
    return scalars + 2048 * 1000 + 1000, tensors + 2


def predict(rows, gpu, tf32=False):
    """Each row with its roofline time in ms on `gpu` (a GPUS entry) and its share."""
    peak = gpu["tf32"] if tf32 else gpu["fp32"]
    out = []
    for r in rows:
        memory, compute = r["bytes"] / gpu["bandwidth"], r["flops"] / (peak if r["gemm"]
                                                                      else gpu["fp32"])
        out.append(dict(r, ms=1e3 * max(memory, compute),
                        bound="compute" if compute > memory else "memory"))
    total = sum(r["ms"] for r in out)
    for r in out:
        r["share"] = r["ms"] / total
    return out


def summary(rows):
    """Totals: GPU time, launches, host launch time, the predicted step, host syncs."""
    gpu_ms = sum(r["ms"] for r in rows)
    launches = sum(r["launches"] for r in rows)
    host_ms = launches * LAUNCH_US / 1e3
    return dict(gpu_ms=gpu_ms, launches=launches, host_launch_ms=host_ms,
                step_ms=max(gpu_ms, host_ms), host_syncs=sum(HOST_SYNCS.values()))


def by_kernel(rows):
    """{kernel kind: (ms, share, launches)}, the row names without their layer."""
    acc = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for r in rows:
        a = acc[r["kernel"]]
        a[0] += r["ms"]
        a[1] += r["share"]
        a[2] += r["launches"]
    return dict(sorted(acc.items(), key=lambda kv: -kv[1][0]))


BEFORE = {"layout": "channels-first", "optimizer": "per-tensor"}
AFTER = {"layout": "nchw", "optimizer": "fused"}


def before_after(tf32=False):
    """{"before"/"after": {gpu: summary}}: before, channels-first convolutions and the SGD
    step per tensor; after, NCHW convolutions and the fused SGD step."""
    return {when: {name: summary(predict(step_items(**spec), gpu, tf32))
                   for name, gpu in GPUS.items()}
            for when, spec in (("before", BEFORE), ("after", AFTER))}


def readme_lines():
    """The summary table benchmarks/README.md shows (benchmarks/report.py, kind gpu-model):
    computed here from the model, never typed."""
    rows = step_items()
    fp32 = {name: summary(predict(rows, gpu, False)) for name, gpu in GPUS.items()}
    tf32 = {name: summary(predict(rows, gpu, True)) for name, gpu in GPUS.items()}
    before = before_after()["before"]
    names = list(GPUS)
    lines = ["| resnet50 step, batch 64 | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for label, values in (
            ("strict FP32, GPU time", [f"{fp32[n]['gpu_ms']:.1f} ms" for n in names]),
            ("TF32, GPU time", [f"{tf32[n]['gpu_ms']:.1f} ms" for n in names]),
            ("kernel launches per step", [str(fp32[n]["launches"]) for n in names]),
            (f"host launch time at {LAUNCH_US:g} us each",
             [f"{fp32[n]['host_launch_ms']:.1f} ms" for n in names]),
            ("host reads (syncs) per step", [str(fp32[n]["host_syncs"]) for n in names]),
            ("before (channels-first convolutions, SGD per tensor): strict FP32, GPU time",
             [f"{before[n]['gpu_ms']:.1f} ms" for n in names]),
            ("before (channels-first convolutions, SGD per tensor): launches",
             [str(before[n]["launches"]) for n in names])):
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    kinds = by_kernel(predict(rows, GPUS[names[0]], False))
    gemm = sum(share for kind, (_, share, _) in kinds.items() if "GEMM" in kind)
    top = [f"{kind} {share:.1%}" for kind, (_, share, _) in kinds.items()
           if "GEMM" not in kind][:6]
    lines += ["", f"Strict FP32 on the {names[0]}: the GEMMs are {gemm:.0%} of the step; "
              "the largest of the rest: " + ", ".join(top) + "."]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf32", action="store_true", help="GEMMs on TF32 tensor cores")
    parser.add_argument("--layout", choices=LAYOUTS, default="nchw",
                        help="the convolutions' route: nchw (now) or channels-first (before)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="fused",
                        help="the SGD step: fused (now) or per-tensor (before)")
    parser.add_argument("--json", help="write every row and the totals here")
    args = parser.parse_args(argv)
    rows = step_items(layout=args.layout, optimizer=args.optimizer)
    result = {"mode": "tf32" if args.tf32 else "fp32", "layout": args.layout,
              "optimizer": args.optimizer,
              "launch_us": LAUNCH_US, "host_syncs": HOST_SYNCS, "gpus": {}}
    for name, gpu in GPUS.items():
        predicted = predict(rows, gpu, args.tf32)
        result["gpus"][name] = {"summary": summary(predicted), "rows": predicted,
                                "figures": gpu}
    result["before_after"] = before_after(args.tf32)
    h100, h200 = (result["gpus"][g] for g in GPUS)
    print(f"resnet50 training step, batch 64, {result['mode']}, {args.layout} convolutions, "
          f"SGD {args.optimizer}: roofline lower bounds")
    print(f"{'kernel':40} {'H100 ms':>8} {'H200 ms':>8} {'share':>6} {'launches':>8}")
    kinds_200 = by_kernel(h200["rows"])
    for kind, (ms, share, launches) in by_kernel(h100["rows"]).items():
        print(f"{kind:40} {ms:8.2f} {kinds_200[kind][0]:8.2f} {share:6.1%} {launches:8d}")
    for name, g in result["gpus"].items():
        s = g["summary"]
        print(f"{name}: GPU {s['gpu_ms']:.1f} ms, {s['launches']} launches "
              f"({s['host_launch_ms']:.1f} ms of host time at {LAUNCH_US} us), predicted "
              f"step {s['step_ms']:.1f} ms, {s['host_syncs']} host syncs")
    print(f"\nbefore ({BEFORE}) and after ({AFTER}), {result['mode']}:")
    print(f"{'':8} {'GPU':10} {'GPU ms':>8} {'step ms':>8} {'launches':>8}")
    for when, gpus in result["before_after"].items():
        for name, s in gpus.items():
            print(f"{when:8} {name:10} {s['gpu_ms']:8.1f} {s['step_ms']:8.1f} "
                  f"{s['launches']:8d}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
