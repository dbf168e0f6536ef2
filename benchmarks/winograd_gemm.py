"""The Winograd layers' small GEMMs on this machine's BLAS: where the 3x3 layers' time goes.

kernels/winograd.py's forward_core runs, for each task of a few images, an input
transform, 16 GEMMs (OC, C) @ (C, T) (C, OC the channels, T the task's tiles) and an
output transform. On the goal layers (resnet20 at batch 128, resnet18 at batch 16) the
GEMMs are small, and their rate, not the transforms, sets the layer's time. This script
times, on one thread, one task of each Winograd layer of the goal cases:

  split        the task's three steps: input transform, the 16 GEMMs (by the BLAS), output
               transform
  as run       the 16 GEMMs by the BLAS, as forward_core calls it above the policy's loop limit
               (np.dot inside Numba: SciPy's BLAS)
  tile-major   the same products with the tiles as rows, (T, C) @ (C, OC): a layout the
               transforms would have to write and read across channels
  8 images     the GEMMs of a task 8 images wide (T eight times larger), and that whole
               task's time per image beside the task's as run (its V and M 8 times larger)
  numba loop   the same product by kernels/small_gemm.py's Numba loop (LLVM vectorises it
               over the tiles, 8 channels a pass), which cpu.py runs instead of the BLAS
               where the policy's winograd_loop_gemm_max_channels asks for it
  peak         one thread's float32 GEMM rate at 1024 x 1024 (np.matmul)

GEMM rates are 2*16*OC*C*T FLOPs over the best of `--reps` timings. The BLAS kernel is the
one OpenBLAS detects: with --blas-env detect (the default) the script runs itself again
without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE when the environment sets them.

    python benchmarks/winograd_gemm.py --json auto   # results/winograd_gemm_f<family>m<model>_<commit>.json
    python benchmarks/winograd_gemm.py --reps 5      # quicker, noisier
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _process  # noqa: E402
import _timing  # noqa: E402

# (case, N, C, OC, H=W) of the goal cases' Winograd layers (3x3, stride 1, padding 1)
LAYERS = [("r20 conv3x3/s1 16->16", 128, 16, 16, 32),
          ("r20 conv3x3/s1 32->32", 128, 32, 32, 16),
          ("r20 conv3x3/s1 64->64", 128, 64, 64, 8),
          ("r18 conv3x3/s1 64->64", 16, 64, 64, 56),
          ("r18 conv3x3/s1 128->128", 16, 128, 128, 28),
          ("r18 conv3x3/s1 256->256", 16, 256, 256, 14)]


def jitted():
    """The GEMM loops, compiled once: by the BLAS as forward_core calls it, tile-major, and
    by small_gemm.py's loop."""
    import numpy as np
    from numba import njit
    from tinyres.kernels import small_gemm

    @njit(cache=True)
    def as_run(u, v, mm):                    # forward_core's loop: (OC, C) @ (C, T)
        for xi in range(16):
            np.dot(u[xi], v[xi], mm[xi])

    @njit(cache=True)
    def tile_major(ut, vt, mt):              # (T, C) @ (C, OC)
        for xi in range(16):
            np.dot(vt[xi], ut[xi], mt[xi])

    @njit(cache=True)
    def numba_loop(u, v, mm):                # kernels/small_gemm.py's loop
        for xi in range(16):
            small_gemm.matmul_into(u[xi], v[xi], mm[xi])

    return as_run, tile_major, numba_loop


def best(fn, *args, reps):
    fn(*args)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def peak_one_thread(reps):
    import numpy as np
    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    return 2 * 1024 ** 3 / best(np.matmul, a, a, reps=reps) / 1e9


def measure_layer(layer, group, reps, loops):
    """One task of `group` images of the layer: its split and its GEMMs' rates."""
    import numpy as np
    from tinyres.kernels import winograd
    as_run, tile_major, numba_loop = loops
    name, n, c, oc, hw = layer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((group * 8, c, hw, hw), dtype=np.float32)
    u = winograd.weight_transform(rng.standard_normal((oc, c, 3, 3), dtype=np.float32))
    t = winograd.tiles(hw, hw)

    def arrays(images):
        v = np.empty((16, c, images * t), np.float32)
        winograd._input_tiles(x, 0, v)
        return v, np.empty((16, oc, images * t), np.float32)

    v, mm = arrays(group)
    out = np.empty((group * 8, oc, hw, hw), np.float32)
    t_in = best(winograd._input_tiles, x, 0, v, reps=reps)
    t_gemm = best(as_run, u, v, mm, reps=reps)
    t_out = best(winograd._output_tiles, mm, 0, out, reps=reps)
    ut = np.ascontiguousarray(u.transpose(0, 2, 1))
    vt = np.ascontiguousarray(v.transpose(0, 2, 1))
    mt = np.empty((16, group * t, oc), np.float32)
    t_tile_major = best(tile_major, ut, vt, mt, reps=reps)
    mm_loop = np.empty_like(mm)
    t_loop = best(numba_loop, u, v, mm_loop, reps=reps)
    if not np.allclose(mm_loop, mm, rtol=1e-3, atol=1e-3 * np.abs(mm).max()):
        raise AssertionError(f"{name}: the Numba loop GEMM differs from the BLAS's")
    v8, mm8 = arrays(group * 8)
    t_8 = best(as_run, u, v8, mm8, reps=reps)
    task_8 = (best(winograd._input_tiles, x, 0, v8, reps=reps) + t_8
              + best(winograd._output_tiles, mm8, 0, out, reps=reps))
    flops = 2 * 16 * oc * c * group * t
    total = t_in + t_gemm + t_out
    return {"case": name, "n": n, "c": c, "oc": oc, "hw": hw, "images_per_task": group,
            "tiles_per_task": group * t, "task_ms": 1e3 * total,
            "ms_per_image": 1e3 * total / group, "ms_per_image_8x": 1e3 * task_8 / (8 * group),
            "share": {"input": t_in / total, "gemm": t_gemm / total, "output": t_out / total},
            "gflops": {"as_run": flops / t_gemm / 1e9, "tile_major": flops / t_tile_major / 1e9,
                       "images_8x": 8 * flops / t_8 / 1e9, "numba_loop": flops / t_loop / 1e9}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20, help="timings per measurement (best kept)")
    ap.add_argument("--blas-env", choices=_process.BLAS_ENV_SETTINGS, default="detect")
    ap.add_argument("--json", metavar="PATH",
                    help="write the results ('auto': results/winograd_gemm_<cpu>_<commit>.json)")
    args = ap.parse_args(argv)
    _process.rerun_without_blas_variables(args.blas_env, __file__,
                                          sys.argv[1:] if argv is None else argv)

    import numba
    import numpy as np
    from threadpoolctl import threadpool_limits
    from tinyres.kernels import cpu
    groups = [cpu._winograd_group(np.empty((n, c, hw, hw), np.float32), oc)
              for _, n, c, oc, hw in LAYERS]             # at the machine's thread count
    numba.set_num_threads(1)
    info = _timing.machine_info()
    print("\n".join(_timing.header_lines(info)))
    print("Numba compiles for" + _process.target_text(_process.numba_target()))
    loops = jitted()
    rows = []
    with threadpool_limits(1):
        peak = peak_one_thread(args.reps)
        print(f"one thread's float32 GEMM peak (1024 x 1024): {peak:.1f} GFLOP/s")
        for layer, group in zip(LAYERS, groups):
            row = measure_layer(layer, group, args.reps, loops)
            rows.append(row)
            g, s = row["gflops"], row["share"]
            print(f"{row['case']:26s} {group:2d} images, T {row['tiles_per_task']:5d}: "
                  f"input {s['input']:.0%} GEMMs {s['gemm']:.0%} output {s['output']:.0%} | "
                  f"GFLOP/s BLAS {g['as_run']:.1f}, tile-major {g['tile_major']:.1f}, "
                  f"8 images {g['images_8x']:.1f}, Numba loop {g['numba_loop']:.1f} | "
                  f"ms an image {row['ms_per_image']:.3f}, 8 images a task "
                  f"{row['ms_per_image_8x']:.3f}", flush=True)
    if args.json:
        path = args.json
        if path == "auto":
            path = _timing.results_path(info).replace("cpu_f", "winograd_gemm_f")
        _timing.write_json(path, {"machine": info, "numba_target": _process.numba_target(),
                                  "blas_env": args.blas_env,
                                  "reps": args.reps, "peak_one_thread_gflops": peak,
                                  "rows": rows})


if __name__ == "__main__":
    main()
