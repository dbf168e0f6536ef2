"""Data-parallel training step of resnet20 on 1 and 2 MPI ranks: step time, the all-reduce's
share, bytes per step, and the effect of the bucket size.

    python benchmarks/ddp_bench.py                           # 1 and 2 ranks, caps 25, 1, 0.1 MiB
    python benchmarks/ddp_bench.py --ranks 2 --caps 25 --steps 5 --json out.json
    python benchmarks/ddp_bench.py --plan                    # bucket plans of resnet20, resnet50

The parent starts `mpiexec -n R python ddp_bench.py --worker ...` per (ranks, cap); each
rank trains resnet20 (SyncBatchNorm, float32) at --batch images per rank on random 32x32
data and rank 0 reports medians: the step, the time backward's end waited for the
reductions (what overlap did not hide), and a stand-alone all-reduce of the whole
gradient. Each rank gets cores // ranks Numba threads. On a 2-core machine two ranks
share the cores that one rank had, so the step cannot get faster there: the figures
show the cost of communication, not a speed-up.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import header_lines, machine_info  # noqa: E402

PREFIX = "@@ "


def worker(args):
    """One rank: time --steps training steps after --warmup, print rank 0's figures."""
    import numba
    import numpy as np

    import tinyres
    import tinyres.distributed as dist
    import tinyres.nn.functional as F
    from tinyres import nn
    from tinyres.models import resnet20
    from tinyres.nn.parallel import DistributedDataParallel

    dist.init_process_group("mpi")
    rank, size = dist.get_rank(), dist.get_world_size()
    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, os.cpu_count() // size)))
    tinyres.manual_seed(0)
    ddp = DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(resnet20()),
                                  bucket_cap_mb=args.cap)
    opt = tinyres.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(rank)
    x = tinyres.tensor(rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32))
    y = tinyres.tensor(rng.integers(0, 10, args.batch))
    steps, waits = [], []
    for i in range(args.warmup + args.steps):
        dist.barrier()
        start = time.perf_counter()
        loss = F.cross_entropy(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= args.warmup:
            steps.append(time.perf_counter() - start)
            waits.append(ddp._reducer.wait_seconds)
    flat = tinyres.zeros(sum(b.numel for b in ddp._buckets))
    reduce_times = []
    for _ in range(5):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(flat)
        reduce_times.append(time.perf_counter() - start)
    if rank == 0:
        print(PREFIX + json.dumps({
            "ranks": size, "cap_mb": args.cap, "batch_per_rank": args.batch,
            "buckets": len(ddp._buckets), "bytes_per_step": sum(b.nbytes for b in ddp._buckets),
            "step_s": statistics.median(steps), "wait_s": statistics.median(waits),
            "allreduce_s": statistics.median(reduce_times),
            "numba_threads": numba.get_num_threads()}), flush=True)
    dist.destroy_process_group()


def run_case(ranks, cap, args):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    command = [mpiexec if os.path.exists(mpiexec) else "mpiexec", "-n", str(ranks),
               sys.executable, os.path.abspath(__file__), "--worker", "--cap", str(cap),
               "--batch", str(args.batch), "--steps", str(args.steps),
               "--warmup", str(args.warmup)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(PREFIX)]
    return json.loads(lines[-1][len(PREFIX):])


def print_table(rows):
    one_rank = {r["cap_mb"]: r["step_s"] for r in rows if r["ranks"] == 1}
    print(f"{'ranks':>5} {'cap MiB':>8} {'buckets':>7} {'bytes/step':>11} {'step ms':>8} "
          f"{'img/s':>7} {'wait ms':>8} {'wait %':>6} {'allreduce ms':>12} {'vs 1 rank':>9}")
    for r in rows:
        images = r["ranks"] * r["batch_per_rank"] / r["step_s"]
        base = one_rank.get(r["cap_mb"])
        ratio = f"{base * r['ranks'] / r['step_s']:.2f}x" if base else "-"
        print(f"{r['ranks']:>5} {r['cap_mb']:>8g} {r['buckets']:>7} {r['bytes_per_step']:>11,} "
              f"{1e3 * r['step_s']:>8.1f} {images:>7.1f} {1e3 * r['wait_s']:>8.2f} "
              f"{100 * r['wait_s'] / r['step_s']:>6.1f} {1e3 * r['allreduce_s']:>12.2f} "
              f"{ratio:>9}")
    print("vs 1 rank: images/s against one rank's (linear scaling would be the rank count)")


def print_plans():
    """The bucket plans of resnet20 and resnet50 (25 MiB buckets) on one rank."""
    import tinyres.distributed as dist
    from tinyres.models import resnet20, resnet50
    from tinyres.nn.parallel import DistributedDataParallel
    dist.init_process_group("mpi")
    for make in (resnet20, resnet50):
        print(f"--- {make.__name__}")
        print(DistributedDataParallel(make()).bucket_plan())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="1,2", help="rank counts, comma-separated")
    p.add_argument("--caps", default="25,1,0.1", help="bucket_cap_mb values")
    p.add_argument("--batch", type=int, default=128, help="images per rank per step")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--cap", type=float, default=25, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--plan", action="store_true", help="print the bucket plans and stop")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.plan:
        return print_plans()
    info = machine_info()          # CPU flags, BLAS kernel and threads, versions, commit
    print("\n".join("# " + line for line in header_lines(info)))
    rows = [run_case(int(n), float(cap), args) for n in args.ranks.split(",")
            for cap in args.caps.split(",")]
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"commit": info["commit"], "cpu": info["cpu"], "machine": info,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
