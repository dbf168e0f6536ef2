"""Instruction count of one benchmark case under valgrind's callgrind: a measure for
development that timing noise on a shared machine does not move. Timings stay the
measure of record; this says whether a change does more or less work.

    python benchmarks/callgrind_layer.py --case 'r20 conv3x3/s1 16->16' --op fwd+bwd \
        --engine tinyres --batch 8
    python benchmarks/callgrind_layer.py --case 'resnet20 train' --batch 4 --engine torch
    python benchmarks/callgrind_layer.py --list

Only the timed region is counted. The case is built by cpu_bench.py's own make_step (the
same code the timings run), warmed up, then a small C helper (compiled once with the
system's valgrind/callgrind.h) switches callgrind's instrumentation on, `--steps` steps
run, and it switches it off and dumps the counts ('Trigger: Client Request: timed
region'). Valgrind starts with instrumentation off, so the imports and the warm-up run at
near-native speed and count nothing.

Deterministic: one thread everywhere (Numba, OpenBLAS, OpenMP, MKL; the case runs with
threads=1), and the same Numba machine code as a native run. Numba's on-disk cache is
filled first by one native run of the same case (skip with --no-prime), and the native
CPU name and features are pinned through NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, since
under valgrind the CPU reports fewer features and Numba would compile again. On a CPU
with AVX-512 (which valgrind 3.19 cannot run) pass --numba-cpu haswell and
OPENBLAS_CORETYPE=Haswell in the environment.

Comparing two commits: check out each (git worktree), run the same command in each,
compare the 'instructions per step' lines.
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

HELPER_C = r"""
#include <valgrind/callgrind.h>
void region_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void region_stop(void) {
    CALLGRIND_STOP_INSTRUMENTATION;
    CALLGRIND_DUMP_STATS_AT("timed region");
}
"""
TRIGGER = "timed region"
SINGLE_THREAD_ENV = {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                     "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ----- choosing the case ------------------------------------------------------------------
def find_case(cases, name, op=None, batch=None):
    """The one case whose name starts with `name` (and whose op is `op`, for layers), at
    batch `batch` if given, run on one thread. ValueError names the candidates otherwise."""
    found = [c for c in cases if c["name"].startswith(name)
             and (op is None or c.get("op") in (None, op))]
    if len(found) != 1:
        listing = "; ".join(c["name"] for c in found) or "none"
        raise ValueError(f"callgrind_layer: --case {name!r} --op {op!r} must match exactly "
                         f"one case, matched {len(found)}: {listing}")
    case = dict(found[0], threads=1)
    if batch:
        case["n"] = batch
    return case


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", help="start of a cpu_bench.py case name")
    ap.add_argument("--op", choices=("fwd", "fwd+bwd"), help="for layer cases")
    ap.add_argument("--engine", default="tinyres", choices=("tinyres", "torch", "numpy"))
    ap.add_argument("--batch", type=int, help="batch size instead of the case's own")
    ap.add_argument("--steps", type=int, default=1, help="steps counted (default 1)")
    ap.add_argument("--warmup", type=int, default=2, help="uncounted steps first")
    ap.add_argument("--no-prime", action="store_true",
                    help="skip the native run that fills Numba's cache")
    ap.add_argument("--numba-cpu", metavar="NAME",
                    help="NUMBA_CPU_NAME for both runs (default: this CPU, its features)")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    ap.add_argument("--keep", metavar="DIR", help="keep callgrind's files in DIR")
    ap.add_argument("--json", metavar="PATH", help="write the count and the machine as JSON")
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not (args.list or args.inner or args.case):
        ap.error("--case is required (see --list)")
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    return args


# ----- the parent ---------------------------------------------------------------------------
def build_helper(directory):
    """Compile the start/stop helper; returns the .so path."""
    src, lib = os.path.join(directory, "region.c"), os.path.join(directory, "region.so")
    with open(src, "w") as f:
        f.write(HELPER_C)
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", lib, src], check=True)
    return lib


def numba_cpu_env(name=None):
    """NUMBA_CPU_NAME/FEATURES: `name` as given, else this CPU's, detected natively."""
    if name:
        return {"NUMBA_CPU_NAME": name}
    import llvmlite.binding as llvm
    return {"NUMBA_CPU_NAME": llvm.get_host_cpu_name(),
            "NUMBA_CPU_FEATURES": llvm.get_host_cpu_features().flatten()}


def inner_command(args, case, lib):
    spec = {"engine": args.engine, "case": case, "steps": args.steps,
            "warmup": args.warmup, "lib": lib}
    return [sys.executable, os.path.abspath(__file__), "--inner", json.dumps(spec)]


def valgrind_command(out_file):
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out_file}", "--dump-instr=no"]


def region_count(paths):
    """The Ir total of the dump that the helper triggered (its 'totals:' line),
    from the callgrind files at `paths`; None if no such dump."""
    for path in paths:
        with open(path, errors="replace") as f:
            text = f.read()
        if f"Client Request: {TRIGGER}" not in text:
            continue
        m = re.search(r"^totals:\s+(\d+)", text, re.M)
        if m:
            return int(m.group(1))
    return None


def run(args):
    import cpu_bench
    try:
        case = find_case(cpu_bench.all_cases(), args.case, args.op, args.batch)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if shutil.which("valgrind") is None:
        raise SystemExit("callgrind_layer: valgrind is not installed")
    work = args.keep or tempfile.mkdtemp(prefix="callgrind_layer_")
    os.makedirs(work, exist_ok=True)
    env = {**os.environ, **SINGLE_THREAD_ENV, **numba_cpu_env(args.numba_cpu)}
    lib = build_helper(work)
    cmd = inner_command(args, case, lib)
    if not args.no_prime:
        subprocess.run(cmd, env={**env, "CALLGRIND_LAYER_NATIVE": "1"}, check=True)
    out_file = os.path.join(work, "callgrind.out")
    done = subprocess.run(valgrind_command(out_file) + cmd, env=env,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:       # e.g. an instruction valgrind cannot run (AVX-512)
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"callgrind_layer: the run under valgrind failed "
                         f"(exit {done.returncode}):\n{tail}")
    count = region_count(sorted(glob.glob(out_file + "*")))
    if count is None:
        raise SystemExit(f"callgrind_layer: no '{TRIGGER}' dump in {work}")
    print(f"case: {case['name']} (batch {case['n']}), engine {args.engine}, "
          f"{args.steps} step(s) after {args.warmup} warm-up, 1 thread")
    print(f"instructions: {count}")
    print(f"instructions per step: {count // args.steps}")
    if args.json:
        write_record(args.json, args, case, count, env)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return count


def write_record(path, args, case, count, env):
    """The count, what was counted and the machine, as JSON (report.py's 'callgrind')."""
    import _timing
    pinned = {k: env[k] for k in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES") if k in env}
    _timing.write_json(path, {
        "machine": _timing.machine_info(), "case": case, "engine": args.engine,
        "batch": case["n"], "steps": args.steps, "warmup": args.warmup,
        "instructions": count, "instructions_per_step": count // args.steps,
        "environment": {**SINGLE_THREAD_ENV, **pinned},
        "valgrind": subprocess.run(["valgrind", "--version"], capture_output=True,
                                   text=True).stdout.strip()})


# ----- the process under valgrind -------------------------------------------------------------
def inner(spec):
    """Build the step, warm it up, and run the counted steps between the helper's calls."""
    import ctypes
    import cpu_bench
    step = cpu_bench.make_step(spec["engine"], spec["case"])
    for _ in range(spec["warmup"]):
        step()
    if os.environ.get("CALLGRIND_LAYER_NATIVE"):
        return
    lib = ctypes.CDLL(spec["lib"])
    steps = range(spec["steps"])
    lib.region_start()
    for _ in steps:
        step()
    lib.region_stop()


def main(argv=None):
    args = parse_args(argv)
    if args.inner:
        inner(json.loads(args.inner))
        return
    if args.list:
        import cpu_bench
        print("\n".join(c["name"] for c in cpu_bench.all_cases()))
        return
    run(args)


if __name__ == "__main__":
    main()
