"""Convolution: tinyres (im2col + cuBLAS on the GPU, im2col + BLAS on the CPU) beside
cuDNN through PyTorch (or CuPy's cuDNN bindings), on the convolution shapes of resnet20
(batch 128, 32x32) and resnet50 (batch 64, 224x224), then whole training steps.

Precision is the same on both sides: strict float32 by default (TF32 off in cuBLAS and
cuDNN, CUPY_TF32=0), TF32 on both sides with --tf32. CuPy reads CUPY_TF32 when it is
imported, so this script sets the variable before anything imports CuPy and then pins
CuPy's float32 compute type explicitly (pin_cupy_tf32), recorded in the JSON. Every
shape's outputs (y, and grad_x and grad_w for fwd+bwd) are compared with PyTorch's on the
same inputs; a difference above TOLERANCE marks the row FAIL. The reference is cuDNN
through PyTorch only (CuPy 14 dropped its cuDNN bindings).

Columns:
  shape            N x C x H x W input, OC, kernel/stride; "fwd" forward, "fwd+bwd"
                   forward and backward (input and weight gradients)
  tinyres ms       median time (CUDA events on the GPU) after warm-up
  ref ms           the same on the reference (cuDNN via torch; torch CPU with --device cpu)
  ratio            tinyres / reference (above 1: tinyres is slower)
  GF/s             2*N*OC*OH*OW*C*kh*kw per forward, three times that for fwd+bwd
  MB               peak GPU memory of one step: CuPy's pool after a step on an emptied
                   pool (tinyres), torch.cuda.max_memory_allocated (reference)
  max rel err      max |tinyres - reference| / max |reference| over the outputs
  geomean          geometric mean of the ratios over the resnet50 shapes, per pass
Whole models: images per second of a training step (forward, cross-entropy, backward,
SGD step) of resnet50 (batch 64) and resnet20 (batch 128), the SGD step fused on both sides
(`SGD(..., fused=True)`: one multi-tensor update, torch's and tinyres's), and for tinyres what one step
does besides (tinyres.cuda.count_syncs, one step after the timed ones):
  launches/step    launches of tinyres's own CUDA kernels (kernels/cuda.py); CuPy's
                   elementwise kernels and cuBLAS GEMMs are not counted (the roofline model
                   benchmarks/gpu_model.py predicts all launches); 0 on the CPU
  syncs/step       host reads of device data (each one a host synchronisation on a GPU);
                   on the CPU the reads a GPU step would make

    python benchmarks/conv_bench.py                       # GPU, strict fp32
    python benchmarks/conv_bench.py --tf32 --json out.json
    python benchmarks/conv_bench.py --device cpu --quick  # CPU against torch CPU

On the CPU each engine runs in its own worker process and the engines alternate (the
machinery of cpu_bench.py); --quick there uses small batches.
"""
import argparse
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402
import cpu_bench  # noqa: E402
from cpu_engines import _inputs  # noqa: E402


# ----- shapes -----------------------------------------------------------------------------
def shape_cases(quick, device):
    """(group, case) pairs: the distinct convolutions of resnet20 and resnet50."""
    r20_batch, r50_batch = 128, 64
    if quick and device == "cpu":
        r50_batch = 4
    r20 = cpu_bench.distinct(cpu_bench.model_convs("resnet20", r20_batch)[0])
    r50 = cpu_bench.distinct(cpu_bench.model_convs("resnet50", r50_batch)[0])
    if quick:
        r20, r50 = r20[:3], r50[:5]          # the stem and the first bottleneck
    return ([("resnet20", c) for c in cpu_bench.conv_cases("r20", r20)]
            + [("resnet50", c) for c in cpu_bench.conv_cases("r50", r50)])


def model_cases(quick, device):
    if device == "cpu":
        if quick:
            return [cpu_bench.model_case("resnet20", "train", 32)]
        return [cpu_bench.model_case("resnet20", "train", 128),
                cpu_bench.model_case("resnet50", "train", 8)]
    return [cpu_bench.model_case("resnet50", "train", 64),
            cpu_bench.model_case("resnet20", "train", 128)]


# ----- the GPU engines (one process; CUDA events) ------------------------------------------
def gpu_time_ms(fn, warmup, reps, event_cls, sync):
    """Median over reps of the GPU time of fn(), measured with CUDA events."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        start, end = event_cls(), event_cls()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(event_cls.elapsed(start, end))
    return statistics.median(times)


def tinyres_gpu_step(case, np, device="cuda"):
    """(step, outputs) of one convolution case in tinyres: step() runs it, outputs() runs
    it once more and returns [y] or [y, grad_x, grad_w] as NumPy arrays. (device="cpu"
    runs the same code where there is no GPU: the tests do.)"""
    import tinyres
    import tinyres.nn.functional as F
    rng = np.random.default_rng(0)
    x_np, w_np, g_np = _inputs(case, rng, np)
    x = tinyres.tensor(x_np, requires_grad=True, device=device)
    w = tinyres.tensor(w_np, requires_grad=True, device=device)
    g = tinyres.tensor(g_np, device=device)

    def fwd():
        return F.conv2d(x, w, None, case["stride"], case["pad"])

    def step():
        x.grad = w.grad = None
        out = fwd()
        if case["op"] != "fwd":
            out.backward(g)
        return out

    def outputs():
        out = step()
        return [out.numpy()] + ([] if case["op"] == "fwd" else [x.grad.numpy(), w.grad.numpy()])
    return step, outputs


def torch_gpu_step(case, np, device="cuda"):
    """(step, outputs) of one convolution case in PyTorch (cuDNN), as tinyres_gpu_step."""
    import torch
    import torch.nn.functional as F
    rng = np.random.default_rng(0)
    x_np, w_np, g_np = _inputs(case, rng, np)
    x = torch.from_numpy(x_np).to(device).requires_grad_()
    w = torch.from_numpy(w_np).to(device).requires_grad_()
    g = torch.from_numpy(g_np).to(device)

    def step():
        x.grad = w.grad = None
        out = F.conv2d(x, w, None, case["stride"], case["pad"])
        if case["op"] != "fwd":
            out.backward(g)
        return out

    def outputs():
        out = step().detach()
        parts = [out] + ([] if case["op"] == "fwd" else [x.grad, w.grad])
        return [t.cpu().numpy() for t in parts]
    return step, outputs


GPU_REPS = {False: (5, 20), True: (2, 5)}   # (warm-ups, timed) per shape, by --quick
FUSED_SGD = True    # both engines: one fused multi-tensor SGD update (like with like)
# The largest error allowed, relative to the largest magnitude of the reference's output:
# strict float32 GEMMs differ by summation order only; TF32 rounds the inputs to 10 bits.
TOLERANCE = {False: 1e-4, True: 2e-2}


def compare_outputs(ours, ref, tf32):
    """{"max_rel_err": worst over the outputs of max|ours - ref| / max|ref|, "ok": within
    TOLERANCE[tf32] and the same shapes}."""
    import numpy as np
    if len(ours) != len(ref) or any(a.shape != b.shape for a, b in zip(ours, ref)):
        return {"max_rel_err": None, "ok": False,
                "error": f"shapes {[a.shape for a in ours]} vs {[b.shape for b in ref]}"}
    worst = max(float(np.max(np.abs(a.astype(np.float64) - b)) / max(float(np.max(np.abs(b))),
                                                                     1e-30))
                for a, b in zip(ours, ref))
    return {"max_rel_err": worst, "ok": bool(worst <= TOLERANCE[tf32])}


def cupy_peak_mb(fn):
    """fn() run on an emptied CuPy pool; the pool's size afterwards (MB): what it had to
    hold at the peak (an upper bound: freed blocks stay in the pool)."""
    import cupy
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    fn()
    cupy.cuda.Device().synchronize()
    return pool.total_bytes() / 2**20


def torch_peak_mb(fn):
    """fn() with torch's peak-memory counter reset; the peak it allocated (MB)."""
    import torch
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def torch_gpu_model_step(case, np, device="cuda"):
    import torch
    import torch.nn.functional as F
    model = (torch_resnet50() if case["model"] == "resnet50"
             else cpu_bench.torch_model(case["model"])).to(device)
    size = 32 if case["model"] == "resnet20" else 224
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((case["n"], 3, size, size),
                                             dtype=np.float32)).to(device)
    y = torch.from_numpy(rng.integers(0, 10, case["n"])).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=FUSED_SGD)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def tinyres_gpu_model_step(case, np, device="cuda"):
    import tinyres
    import tinyres.nn.functional as F
    from tinyres.models import get_model
    model = get_model(case["model"])
    model.to(device)
    size = 32 if case["model"] == "resnet20" else 224
    rng = np.random.default_rng(0)
    x = tinyres.tensor(rng.standard_normal((case["n"], 3, size, size), dtype=np.float32),
                       device=device)
    y = tinyres.tensor(rng.integers(0, 10, case["n"]), device=device)
    opt = tinyres.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=FUSED_SGD)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def step_counts(step):
    """{"launches", "host_reads"} of one call of step() (tinyres.cuda.count_syncs)."""
    from tinyres.cuda import count_syncs
    with count_syncs() as counted:
        step()
    return {"launches": counted.launches, "host_reads": counted.host_reads}


def torch_resnet50():
    """torchvision's resnet50 layout (v1.5: the stride on the 3x3), without torchvision."""
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, inp, planes, stride):
            super().__init__()
            out = planes * 4
            self.body = nn.Sequential(
                nn.Conv2d(inp, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(),
                nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes),
                nn.ReLU(), nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out))
            self.downsample = None
            if stride != 1 or inp != out:
                self.downsample = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False),
                                                nn.BatchNorm2d(out))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            return (self.body(x) + identity).relu()

    layers, inp = [], 64
    for planes, count, stride in zip((64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 2, 2)):
        for i in range(count):
            layers.append(Bottleneck(inp, planes, stride if i == 0 else 1))
            inp = planes * 4
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1), *layers, nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(2048, 1000))


def gpu_reference(tf32):
    """("cuDNN (torch)", step maker) when torch has CUDA, else (None, the reason). CuPy 14
    has no cuDNN bindings any more (cupyx.cudnn is gone), so PyTorch is the only reference."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    if not torch.cuda.is_available():
        return None, f"torch {torch.__version__} has no usable CUDA"
    pin_torch_tf32(torch, tf32)
    torch.backends.cudnn.benchmark = True
    return "cuDNN (torch)", torch_gpu_step


def pin_torch_tf32(torch, tf32):
    """TF32 on or off in torch's cuBLAS matmuls and cuDNN convolutions: the fp32_precision
    API where torch has it (2.9+; mixing it with the legacy allow_tf32 flags is an error
    there), else the allow_tf32 flags. The per-operator settings are set themselves and
    read back: on torch 2.11 setting cudnn.fp32_precision left cudnn.conv at its default
    'tf32', so a "strict" run compared against TF32 convolutions. Returns the settings."""
    if hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision"):
        precision = "tf32" if tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
        found = {"matmul": torch.backends.cuda.matmul.fp32_precision,
                 "cudnn_conv": torch.backends.cudnn.conv.fp32_precision}
        if set(found.values()) != {precision}:
            raise RuntimeError(f"torch's float32 precision could not be set to {precision}: "
                               f"{found}")
        return found
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return {"matmul_allow_tf32": tf32, "cudnn_allow_tf32": tf32}


def pin_cupy_tf32(tf32):
    """Set CuPy's float32 GEMM compute type to TF32 or strict FP32, whatever CUPY_TF32
    said when CuPy was imported (it is read once, at import, so an earlier import in the
    same process would otherwise win); return the type now in force, by name."""
    import numpy as np
    from cupy._core import _routines_linalg as linalg
    f32 = np.dtype(np.float32)
    linalg.set_compute_type(f32, linalg.COMPUTE_TYPE_TF32 if tf32 else linalg.COMPUTE_TYPE_FP32)
    return linalg.compute_type_to_str(linalg.get_compute_type(f32))


def gpu_info():
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    return {"gpu": name.decode() if isinstance(name, bytes) else name,
            "cupy": cupy.__version__, "cupy_tf32": os.environ.get("CUPY_TF32"),
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cupy.cuda.runtime.driverGetVersion()}


def gpu_shape_row(group, case, engines, tf32, warmup, reps, event, sync, release):
    """One convolution case on each (engine, step maker, peak-memory probe) of engines:
    time, peak memory, and the outputs of "tinyres" compared with those of "ref".
    release() hands cached GPU memory back between engines."""
    import numpy as np
    row, outputs = {"group": group, "case": case}, {}
    for engine, maker, peak in engines:
        try:
            step, outputs[engine] = maker(case, np)
            row[engine] = {"ms": gpu_time_ms(step, warmup, reps, event, sync),
                           "peak_mb": peak(step)}
            outputs[engine] = outputs[engine]()
        except Exception as err:
            row[engine] = {"error": f"{type(err).__name__}: {err}"}
            outputs.pop(engine, None)
        release()
    if len(outputs) == 2:
        row["check"] = compare_outputs(outputs["tinyres"], outputs["ref"], tf32)
    return row


def run_gpu(args, info, progress=lambda rows, models: None):
    """(extra machine info, shape rows, model rows) on the GPU; progress(rows, models) is
    called after each row (the caller prints it and saves what there is so far)."""
    import numpy as np
    import cupy
    try:
        cupy_compute = pin_cupy_tf32(args.tf32)
    except (ImportError, AttributeError) as err:    # CuPy moved its private API
        cupy_compute = f"not pinned ({type(err).__name__}: {err}); CUPY_TF32=" + \
            os.environ["CUPY_TF32"]
    ref_name, ref_step = gpu_reference(args.tf32)
    if ref_name is None:
        print(f"note: no reference column: {ref_step}")
        ref_step = None
    print(f"reference: {ref_name}; precision: {'TF32' if args.tf32 else 'strict fp32'} "
          f"(CuPy float32 GEMMs: {cupy_compute})")

    def cupy_event():
        return cupy.cuda.Event()
    cupy_event.elapsed = cupy.cuda.get_elapsed_time      # milliseconds
    # torch and CuPy work on the current stream of the same device; CUDA events on
    # CuPy's null stream bracket the work of either after a device-wide synchronize.
    sync = cupy.cuda.Device().synchronize
    warmup, reps = GPU_REPS[args.quick]

    release = cupy.get_default_memory_pool().free_all_blocks
    engines = [("tinyres", tinyres_gpu_step, cupy_peak_mb)]
    if ref_step is not None:
        engines.append(("ref", ref_step, torch_peak_mb))
    rows, models = [], []
    for group, case in shape_cases(args.quick, "cuda"):
        rows.append(finish_row(gpu_shape_row(group, case, engines, args.tf32, warmup, reps,
                                             cupy_event, sync, release)))
        progress(rows, models)
    for case in ([] if args.no_models else model_cases(args.quick, "cuda")):
        row = {"case": case}
        for engine, maker, peak in (("tinyres", tinyres_gpu_model_step, cupy_peak_mb),
                                    ("ref", torch_gpu_model_step if ref_step else None,
                                     torch_peak_mb)):
            if maker is None:
                continue
            try:
                step = maker(case, np)
                ms = gpu_time_ms(step, 3, 10 if not args.quick else 3, cupy_event, sync)
                row[engine] = {"ms": ms, "images_per_s": case["n"] / ms * 1e3,
                               "peak_mb": peak(step)}
                if engine == "tinyres":
                    row[engine]["per_step"] = step_counts(step)
            except Exception as err:
                row[engine] = {"error": f"{type(err).__name__}: {err}"}
            release()
        models.append(finish_row(row))
        progress(rows, models)
    torch_precision = None
    if ref_step is not None:
        import torch
        torch_precision = pin_torch_tf32(torch, args.tf32)
    return ({"reference": ref_name, "cupy_compute_type": cupy_compute,
             "torch_precision": torch_precision, **gpu_info()}, rows, models)


# ----- the CPU path (workers of cpu_bench.py) ----------------------------------------------
def cpu_specs(case, reps, warmup=1):
    """The worker specs of tinyres and torch for one case (cpu_bench.worker_spec): `warmup`
    untimed and `reps` timed repetitions a round, warm processes."""
    opts = argparse.Namespace(reps=reps, warmup=warmup, first_calls=1, infer_warmup=0)
    return {e: cpu_bench.worker_spec(e, case, opts, "warm") for e in ("tinyres", "torch")}


def run_cpu(args, info):
    script = os.path.abspath(cpu_bench.__file__)
    rounds, reps = (2, 2) if args.quick else (3, 3)
    rows, models = [], []
    for group, case in shape_cases(args.quick, "cpu"):
        case = dict(case, threads=args.threads)
        res = _timing.run_case(script, cpu_specs(case, reps), rounds)
        rows.append(finish_row({"group": group, "case": case, "tinyres": res["tinyres"],
                                "ref": res["torch"]}))
        print_shape_row(rows[-1])
    for case in ([] if args.no_models else model_cases(args.quick, "cpu")):
        if case["model"] == "resnet50":
            continue                      # cpu_bench's torch twins stop at resnet18
        case = dict(case, threads=args.threads)
        res = _timing.run_case(script, cpu_specs(case, 1 if args.quick else 2), rounds)
        for r in res.values():
            if "ms" in r:
                r["images_per_s"] = case["n"] / r["ms"] * 1e3
        if "ms" in res["tinyres"]:       # counted here, in this process, on one step
            import numpy as np
            res["tinyres"]["per_step"] = step_counts(tinyres_gpu_model_step(case, np, "cpu"))
        models.append(finish_row({"case": case, "tinyres": res["tinyres"],
                                  "ref": res["torch"]}))
    return {"reference": "torch CPU"}, rows, models


# ----- the table ---------------------------------------------------------------------------
def finish_row(row):
    t, r = row.get("tinyres", {}), row.get("ref", {})
    row["ratio"] = t["ms"] / r["ms"] if "ms" in t and "ms" in r else None
    flops = row["case"].get("flops")
    for side in (t, r):
        if "ms" in side and flops:
            side["gflops"] = flops / side["ms"] / 1e6
    return row


SHAPE_COLUMNS = [("shape", 48), ("tinyres ms", 11), ("ref ms", 10), ("ratio", 7),
                 ("tinyres GF/s", 12), ("ref GF/s", 10), ("tinyres MB", 10), ("ref MB", 8),
                 ("max rel err", 11)]


def _check_cell(row):
    check = row.get("check")
    if check is None:
        return "-"
    if check["max_rel_err"] is None:
        return "FAIL"
    return f"{check['max_rel_err']:.1e}" + ("" if check["ok"] else " FAIL")


def _cell(side, key, spec):
    if "error" in side:
        return "error"
    return _timing.fmt(side.get(key), spec)


def print_shape_row(row):
    t, r = row.get("tinyres", {}), row.get("ref", {})
    _timing.print_row(SHAPE_COLUMNS, [
        row["case"]["name"], _cell(t, "ms", ".2f"), _cell(r, "ms", ".2f"),
        _timing.fmt(row["ratio"], ".2f"), _cell(t, "gflops", ".1f"),
        _cell(r, "gflops", ".1f"), _cell(t, "peak_mb", ".0f"), _cell(r, "peak_mb", ".0f"),
        _check_cell(row)])


def geomeans(rows):
    out = {}
    for op in ("fwd", "fwd+bwd"):
        ratios = [r["ratio"] for r in rows if r["group"] == "resnet50"
                  and r["case"]["op"] == op and r["ratio"]]
        out[op] = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
    return out


def print_models(models):
    columns = [("training step", 34), ("tinyres img/s", 13), ("ref img/s", 10),
               ("ratio (time)", 12), ("tinyres MB", 10), ("ref MB", 8),
               ("launches/step", 13), ("syncs/step", 10)]
    print()
    _timing.print_header(columns)
    for row in models:
        t, r = row.get("tinyres", {}), row.get("ref", {})
        per_step = t.get("per_step", {})
        _timing.print_row(columns, [row["case"]["name"], _cell(t, "images_per_s", ".1f"),
                                    _cell(r, "images_per_s", ".1f"),
                                    _timing.fmt(row["ratio"], ".2f"),
                                    _cell(t, "peak_mb", ".0f"), _cell(r, "peak_mb", ".0f"),
                                    _timing.fmt(per_step.get("launches"), "d"),
                                    _timing.fmt(per_step.get("host_reads"), "d")])
    print("launches/step: tinyres's own kernels only (not CuPy's elementwise kernels nor "
          "cuBLAS; benchmarks/gpu_model.py predicts all launches); syncs/step: host reads "
          "of device data in one step")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tf32", action="store_true", help="TF32 on both sides (GPU only)")
    ap.add_argument("--quick", action="store_true", help="a few shapes, few repetitions")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--no-models", action="store_true", help="skip the whole-model section")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="CPU threads per engine with --device cpu")
    args = ap.parse_args(argv)
    # Before anything imports CuPy: cuBLAS TF32 in CuPy follows CUPY_TF32 at import time.
    os.environ["CUPY_TF32"] = "1" if args.tf32 else "0"
    if args.tf32 and args.device == "cpu":
        ap.error("--tf32 is a GPU mode")
    info = _timing.machine_info()
    print("\n".join(_timing.header_lines(info)))
    print()
    _timing.print_header(SHAPE_COLUMNS)
    if args.device == "cuda":
        def progress(rows, models):     # a row as soon as it is measured, and saved so far
            if not models:
                print_shape_row(rows[-1])
            sys.stdout.flush()
            if args.json:
                _timing.write_json(args.json, {"machine": info, "device": args.device,
                                               "tf32": args.tf32, "partial": True,
                                               "shapes": rows, "models": models},
                                   quiet=True)
        extra, rows, models = run_gpu(args, info, progress)
    else:
        extra, rows, models = run_cpu(args, info)
    info.update(extra)
    if "gpu" in info:
        print(f"GPU: {info['gpu']}, CuPy {info['cupy']}, CUDA runtime "
              f"{info['cuda_runtime']}, driver {info['cuda_driver']}")
    gm = geomeans(rows)
    print(f"reference: {info['reference']}; geometric mean of tinyres/reference over the "
          f"resnet50 shapes: fwd {_timing.fmt(gm['fwd'], '.2f')}, "
          f"fwd+bwd {_timing.fmt(gm['fwd+bwd'], '.2f')}")
    failed = [r["case"]["name"] for r in rows if r.get("check") and not r["check"]["ok"]]
    if failed:
        print(f"OUTPUT CHECK FAILED (beyond {TOLERANCE[args.tf32]:g} of the reference): "
              f"{', '.join(failed)}")
    print_models(models)
    if args.json:
        _timing.write_json(args.json, {"machine": info, "device": args.device,
                                       "tf32": args.tf32, "quick": args.quick,
                                       "partial": False,
                                       "sgd_fused": FUSED_SGD,
                                       "shapes": rows, "geomean_resnet50": gm,
                                       "models": models, "check_failed": failed})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
