"""This machine's practical peaks, and how close each benchmarked layer comes to them.

Two measurements, all cores, best of many short repetitions over a few sizes (on a shared
machine the best one is the one that had the cores to itself; the load average is recorded
beside them):
  GEMM peak   NumPy's float32 matmul (its BLAS's sgemm) on large square matrices:
              2*n**3 FLOPs per product.
  bandwidth   a STREAM-like triad a = b + s*c over arrays far larger than the caches, as a
              parallel Numba loop (NumPy's copy where Numba is missing): 3 arrays of bytes
              per pass (two read, one written; the write-allocate read is not counted).

    python benchmarks/roofline.py --json auto   # results/roofline_f<family>m<model>_<commit>.json
    python benchmarks/roofline.py --quick          # smaller sizes, fewer repetitions
    python benchmarks/roofline.py --update results/roofline_X.json   # best of all runs

OpenBLAS picks its kernel by detection: where the environment sets OPENBLAS_CORETYPE or
OPENBLAS_L2_SIZE the script runs itself again without them (`--blas-env inherit` keeps
them); the JSON's machine record names the kernel that ran.

Each case of a cpu_bench.py results file then gets (layer_bound; report.py's table):
  FLOPs       the case's convolution FLOPs (cpu_bench.py's count: 2*N*OC*OH*OW*C*k*k a
              forward, 3x that for forward+backward); 0 for batch norm and ReLU
  bytes       compulsory float32 traffic, every tensor counted once each time a pass
              reads or writes it, no intermediate (im2col columns, Winograd tiles) counted:
                conv fwd      x + w + y
                conv fwd+bwd  (x + w + y) + (g + x + w + dx + dw) = 3x + 3w + 2y
                batch norm / ReLU fwd+bwd  (x + y) + (g + x + dx) = 5x  (+ 6 per-channel
                              vectors for batch norm: weight, bias, mean, invstd, and the
                              two parameter gradients)
  bound       max(FLOPs / GEMM peak, bytes / bandwidth): no engine can beat it
  fraction    bound / measured time, per engine (1.0 would be running at the roofline)
Whole models: bound = FLOPs / GEMM peak (bytes not counted), so the fraction is the
model's achieved FLOP rate as a share of the GEMM peak.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _process  # noqa: E402
import _timing  # noqa: E402

FLOAT32 = 4


# ----- counting -----------------------------------------------------------------------------
def out_size(h, k, stride, pad):
    return (h + 2 * pad - k) // stride + 1


def conv_tensor_elements(case):
    """(x, w, y) element counts of a convolution case."""
    oh = out_size(case["h"], case["k"], case["stride"], case["pad"])
    ow = out_size(case["w"], case["k"], case["stride"], case["pad"])
    x = case["n"] * case["c"] * case["h"] * case["w"]
    w = case["oc"] * case["c"] * case["k"] * case["k"]
    return x, w, case["n"] * case["oc"] * oh * ow


def case_bytes(case):
    """Compulsory bytes of a layer case under the rule in the module docstring; None for
    whole models."""
    kind, op = case.get("kind"), case.get("op")
    if kind == "conv":
        x, w, y = conv_tensor_elements(case)
        elements = x + w + y if op == "fwd" else 3 * x + 3 * w + 2 * y
        return FLOAT32 * elements
    if kind in ("batchnorm", "relu"):
        x = case["n"] * case["c"] * case["h"] * case["w"]
        per_pass = 2 * x if op == "fwd" else 5 * x
        vectors = (2 if op == "fwd" else 6) * case["c"] if kind == "batchnorm" else 0
        return FLOAT32 * (per_pass + vectors)
    return None


def case_flops(case):
    """The FLOPs the roofline charges to the GEMM peak: the case's own count, 0 for
    pointwise layers."""
    return case.get("flops") or 0


def layer_bound(case, peaks):
    """{'flops', 'bytes', 'bound_ms', 'limit'} of one case against the peaks
    ({'gemm_gflops', 'bandwidth_gbs'}). A whole model's bytes are not counted (None):
    its bound is its FLOPs at the GEMM peak, so its share of the bound is its share of
    the GEMM peak."""
    flops, nbytes = case_flops(case), case_bytes(case)
    compute_ms = flops / (peaks["gemm_gflops"] * 1e6)
    memory_ms = 0.0 if nbytes is None else nbytes / (peaks["bandwidth_gbs"] * 1e6)
    return {"flops": flops, "bytes": nbytes, "bound_ms": max(compute_ms, memory_ms),
            "limit": "compute" if compute_ms >= memory_ms else "memory"}


def achieved_fraction(bound_ms, measured_ms):
    """The share of the roofline an engine reached: bound / measured (None if unmeasured)."""
    if measured_ms is None or bound_ms is None or measured_ms <= 0:
        return None
    return bound_ms / measured_ms


# ----- measuring ----------------------------------------------------------------------------
def measure_gemm(n, repeats):
    """Best float32 matmul rate in GFLOP/s over `repeats` products of two n x n matrices."""
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)                     # warm-up: threads, pages
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def _triad_kernel():
    import numba

    @numba.njit(parallel=True, fastmath=True)
    def triad(a, b, c, s):
        for i in numba.prange(a.shape[0]):
            a[i] = b[i] + s * c[i]
    return triad


def measure_bandwidth(megabytes, repeats):
    """Best triad bandwidth in GB/s over arrays of `megabytes` each; returns
    (GB/s, method)."""
    import numpy as np
    n = megabytes * 2 ** 20 // FLOAT32
    b = np.ones(n, dtype=np.float32)
    c = np.full(n, 2.0, dtype=np.float32)
    a = np.zeros(n, dtype=np.float32)
    try:
        kernel, method, moved = _triad_kernel(), "numba parallel triad", 3 * n * FLOAT32
        run = lambda: kernel(a, b, c, np.float32(3.0))  # noqa: E731
    except ImportError:
        method, moved = "numpy copy", 2 * n * FLOAT32
        run = lambda: np.copyto(a, b)                    # noqa: E731
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return moved / best / 1e9, method


GEMM_SIZES = ((512, 200), (1024, 60), (2048, 15))        # (n, repetitions)
TRIAD_SIZES = ((32, 100), (128, 20))                      # (MB per array, repetitions)


def measure(quick=False):
    """The peaks of this machine, with how they were measured: the best rate over several
    sizes, each the best of many repetitions (every size's best is kept in the record).
    The smallest GEMM fits in the caches, which is what a BLAS kernel at its practical
    peak works from; the smallest triad is three times the size of a 32 MB L3."""
    scale = 5 if quick else 1
    gemm = {n: measure_gemm(n, max(2, reps // scale)) for n, reps in GEMM_SIZES}
    triad = {mb: measure_bandwidth(mb, max(2, reps // scale)) for mb, reps in TRIAD_SIZES}
    n_best = max(gemm, key=gemm.get)
    mb_best = max(triad, key=lambda mb: triad[mb][0])
    return {"gemm_gflops": gemm[n_best], "bandwidth_gbs": triad[mb_best][0],
            "gemm_method": f"numpy float32 matmul, best {n_best}x{n_best} of sizes "
                           f"{'/'.join(str(n) for n, _ in GEMM_SIZES)}",
            "bandwidth_method": f"{triad[mb_best][1]}, best {mb_best} MB arrays of sizes "
                                f"{'/'.join(str(mb) for mb, _ in TRIAD_SIZES)} MB",
            "gemm_gflops_by_size": {str(n): rate for n, rate in gemm.items()},
            "bandwidth_gbs_by_size": {str(mb): bw for mb, (bw, _) in triad.items()}}


def auto_path(machine):
    ident = machine.get("cpu_identity") or {}
    tag = f"f{ident.get('cpu family', 'x')}m{ident.get('model', 'x')}"
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                        f"roofline_{tag}_{machine.get('commit', 'unknown')}.json")


def run_summary(info, peaks):
    """One measurement run, as kept in a record's 'runs'."""
    return {"date": info.get("date"), "loadavg_at_start": info.get("loadavg_at_start"),
            "commit": info.get("commit"), **peaks}


def merge_runs(previous, info, peaks):
    """A record whose peaks are the best of every run so far (this one and the runs of
    `previous`, a record of the same CPU), each quantity with the method of its best run."""
    if previous and previous.get("machine", {}).get("cpu_identity") != info.get("cpu_identity"):
        raise ValueError("roofline: --update names a file of another CPU")
    runs = (previous.get("runs") or [run_summary(previous["machine"], previous["peaks"])]
            if previous else []) + [run_summary(info, peaks)]
    gemm = max(runs, key=lambda r: r["gemm_gflops"])
    memory = max(runs, key=lambda r: r["bandwidth_gbs"])
    best = {"gemm_gflops": gemm["gemm_gflops"],
            "gemm_method": f"{gemm['gemm_method']}; best of {len(runs)} runs ({gemm['date']})",
            "bandwidth_gbs": memory["bandwidth_gbs"],
            "bandwidth_method": f"{memory['bandwidth_method']}; best of {len(runs)} runs "
                                f"({memory['date']})"}
    return {"machine": info, "peaks": best, "runs": runs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    ap.add_argument("--json", metavar="PATH", help="write the peaks as JSON ('auto': "
                                                   "results/roofline_<cpu>_<commit>.json)")
    ap.add_argument("--update", metavar="PATH",
                    help="add this run to an earlier record of this CPU: the peaks become "
                         "the best of all its runs (written to --json, else to PATH)")
    ap.add_argument("--blas-env", choices=_process.BLAS_ENV_SETTINGS, default="detect",
                    help="detect (the default): run without OPENBLAS_CORETYPE and "
                         "OPENBLAS_L2_SIZE, so that OpenBLAS picks its kernel from the CPU; "
                         "inherit: keep them")
    args = ap.parse_args(argv)
    _process.rerun_without_blas_variables(args.blas_env, __file__,
                                          sys.argv[1:] if argv is None else argv)
    info = _timing.machine_info()
    print("\n".join(_timing.header_lines(info)))
    peaks = measure(args.quick)
    print(f"GEMM peak {peaks['gemm_gflops']:.1f} GFLOP/s ({peaks['gemm_method']})")
    print(f"bandwidth {peaks['bandwidth_gbs']:.1f} GB/s ({peaks['bandwidth_method']})")
    previous = None
    if args.update:
        with open(args.update) as f:
            previous = json.load(f)
    record = merge_runs(previous, info, peaks)
    path = args.json or args.update
    if path:
        path = auto_path(info) if path == "auto" else path
        _timing.write_json(path, record)


if __name__ == "__main__":
    main()
