"""Where a tinyres training step spends its time: cProfile over a few steps, by function.

Builds the same step as cpu_bench.py (forward, cross-entropy, backward, SGD step), runs
`--warmup` steps untimed, times `--steps` steps, then profiles `--steps` more and prints
the functions with the most time of their own, per step. The Numba cores
(kernels/cpu.py's `_..._core` functions) each count as one call: their time is the
kernel's, threads included. cProfile adds some overhead per Python call, so the profiled
total is a little above the timed one.

    python benchmarks/profile_step.py                      # resnet20, batch 128
    python benchmarks/profile_step.py --model resnet18 --batch 16 --steps 2
"""
import argparse
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_engines  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)

    import numpy as np
    case = {"kind": "train", "model": args.model, "n": args.batch}
    step = cpu_engines.make_tinyres_step(case, np, args.threads)
    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    per_step = (time.perf_counter() - start) / args.steps
    print(f"{args.model} training step, batch {args.batch}, {args.threads} threads: "
          f"{per_step * 1e3:.1f} ms a step (mean of {args.steps})")

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(args.steps):
        step()
    profile.disable()
    stats = pstats.Stats(profile).stats
    rows = sorted(((tottime / args.steps, calls / args.steps, f"{os.path.basename(file)}:"
                    f"{line}({name})") for (file, line, name), (_, calls, tottime, _, _)
                   in stats.items()), reverse=True)
    total = sum(r[0] for r in rows)
    print(f"profiled: {total * 1e3:.1f} ms a step\n")
    print(f"{'ms/step':>8}  {'share':>6}  {'calls':>6}  function")
    for seconds, calls, where in rows[:args.top]:
        print(f"{seconds * 1e3:8.1f}  {seconds / total:6.1%}  {calls:6.0f}  {where}")


if __name__ == "__main__":
    main()
