"""What one parallel Numba call costs under each threading layer, on this machine.

Numba runs `prange` loops on a thread pool chosen once per process ('tbb', 'omp' or
'workqueue'), so every candidate is measured in a fresh subprocess with
NUMBA_THREADING_LAYER (and, for OpenMP, OMP_WAIT_POLICY) set in its environment. The rows
"tinyres default" set nothing and show the layer tinyres.kernels.cpu picks by itself; the
"no tbb" rows hide Numba's TBB pool from the child, as on a machine without the tbb package.

Columns (medians after warm-up):
  tiny us        a parallel ReLU core on 64 float32 values, called back to back
  idle us        the same call after 2 ms of idling, when a pool's threads may sleep
  after BLAS us  the same call right after a 256x256 float32 matmul, whose BLAS
                 threads may still hold the cores
  serial us      a serial (parallel=False) njit twin of the tiny call, for comparison
  relu ms        cpu.relu_forward on a 128x16x32x32 float32 array
  im2col ms      cpu.im2col of that array, 3x3 kernel, stride 1, padding 1

    python benchmarks/numba_overhead.py [--json out.json]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

_HIDE_TBB = "TINYRES_BENCH_HIDE_TBB"
CANDIDATES = [
    ("tinyres default", {}),
    ("numba default", {"NUMBA_THREADING_LAYER": "default"}),
    ("tbb", {"NUMBA_THREADING_LAYER": "tbb"}),
    ("tinyres, no tbb", {_HIDE_TBB: "1"}),
    ("numba, no tbb", {"NUMBA_THREADING_LAYER": "default", _HIDE_TBB: "1"}),
    ("omp", {"NUMBA_THREADING_LAYER": "omp"}),
    ("omp, wait active", {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "active"}),
    ("omp, wait passive", {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "passive"}),
    ("workqueue", {"NUMBA_THREADING_LAYER": "workqueue"}),
]


def _median_seconds(call, repeats, before=None):
    """Median time of call(); before() runs untimed ahead of each call."""
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def measure():
    """Run in the child process: time the calls and return a dict of results."""
    if os.environ.get(_HIDE_TBB):
        sys.modules["numba.np.ufunc.tbbpool"] = None     # its import now fails
    import numba
    import numpy as np

    from tinyres.kernels import cpu

    serial_relu = numba.njit(cpu._relu_forward_core.py_func)    # parallel=False
    tiny = np.linspace(-1.0, 1.0, 64, dtype=np.float32)
    tiny_out = np.empty_like(tiny)
    medium = np.random.default_rng(0).standard_normal((128, 16, 32, 32), dtype=np.float32)
    square = np.random.default_rng(1).standard_normal((256, 256), dtype=np.float32)

    def tiny_call():
        cpu._relu_forward_core(tiny, tiny_out)

    for _ in range(50):                      # compile (or load from cache) and warm up
        tiny_call()
        serial_relu(tiny, tiny_out)
        square @ square
    cpu.relu_forward(medium)
    cpu.im2col(medium, 3, 3, 1, 1, 1, 1)
    return {
        "layer_used": numba.threading_layer(),
        "threads": numba.get_num_threads(),
        "tiny_us": 1e6 * _median_seconds(tiny_call, 2000),
        "idle_us": 1e6 * _median_seconds(tiny_call, 200, before=lambda: time.sleep(0.002)),
        "after_blas_us": 1e6 * _median_seconds(tiny_call, 300, before=lambda: square @ square),
        "serial_us": 1e6 * _median_seconds(lambda: serial_relu(tiny, tiny_out), 2000),
        "relu_ms": 1e3 * _median_seconds(lambda: cpu.relu_forward(medium), 30),
        "im2col_ms": 1e3 * _median_seconds(lambda: cpu.im2col(medium, 3, 3, 1, 1, 1, 1), 15),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure()))
        return

    base_env = {k: v for k, v in os.environ.items()
                if k not in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY",
                             "OMP_WAIT_POLICY", _HIDE_TBB)}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    header = (f"{'candidate':<18} {'layer used':<10} {'threads':>7} {'tiny us':>8} "
              f"{'idle us':>8} {'after BLAS us':>13} {'serial us':>9} {'relu ms':>8} "
              f"{'im2col ms':>9}")
    print(header)
    print("-" * len(header))
    rows = []
    for name, extra in CANDIDATES:
        proc = subprocess.run([sys.executable, __file__, "--child"], env={**base_env, **extra},
                              capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{name:<18} failed: {last}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"candidate": name, "env": extra, **r})
        print(f"{name:<18} {r['layer_used']:<10} {r['threads']:>7} {r['tiny_us']:>8.1f} "
              f"{r['idle_us']:>8.1f} {r['after_blas_us']:>13.1f} {r['serial_us']:>9.1f} "
              f"{r['relu_ms']:>8.2f} {r['im2col_ms']:>9.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
