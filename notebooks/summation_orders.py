"""Run lessons under other float32 summation orders and report every check that fails.

A float32 sum depends on the order of its terms. On a student's machine that order is set
by the BLAS kernel OpenBLAS picks for the CPU (AVX2, AVX-512, ...), by the thread counts,
and by which GEMM the Winograd layers run; a lesson that trains a network must hold under
all of them. This script executes each lesson (its solutions too, as tests/test_notebooks.py
does) once per order and prints the errors of its cells:

    python notebooks/summation_orders.py 05 08            # the 28 orders below
    python notebooks/summation_orders.py --quick 05       # 3 of them

An order is a set of environment variables for the kernel (OPENBLAS_CORETYPE names an
x86 kernel of OpenBLAS's; the Haswell kernel is what OpenBLAS detects on an AVX2 machine)
and the Winograd GEMMs by tinyres's loop or by the BLAS (which of them is the default
depends on the kernel: the loop on OpenBLAS's AVX2 and older kernels, the BLAS on its
AVX-512 ones). On an AVX-512 machine the detected kernel is an AVX-512 one, so the Haswell
kernel is on the list in its own right (on an AVX2 machine it is the detected one twice).
"""
import argparse
import itertools
import os
import sys
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_lessons as lessons  # noqa: E402

KERNELS = [{}, {"OPENBLAS_CORETYPE": "Haswell"}, {"OPENBLAS_CORETYPE": "Sandybridge"},
           {"OPENBLAS_CORETYPE": "Nehalem"}]
THREADS = [{}, {"NUMBA_NUM_THREADS": "8"},
           {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}]
MORE_THREADS = [{"NUMBA_NUM_THREADS": str(t), "OPENBLAS_NUM_THREADS": str(t)} for t in (3, 4)]
GEMMS = ["loop", "blas"]
# the GEMMs of the Winograd layers, chosen in the lesson's kernel for the whole run (the
# default depends on the BLAS kernel: kernels/conv_plan.py)
BLAS_GEMMS = ("from tinyres.kernels import conv_plan\n"
              "_order = conv_plan.conv_policy(winograd_loop_gemm_max_channels=None)\n"
              "_order.__enter__()")
LOOP_GEMMS = BLAS_GEMMS.replace("=None", "=conv_plan.LOOP_GEMM_MAX_CHANNELS")
# run last in the kernel: what the order really was (a kernel name OpenBLAS ignores, or a
# policy that did not stick, would otherwise pass unseen)
PROBE = ("import numba, threadpoolctl\n"
         "from tinyres.kernels import conv_plan\n"
         "print(numba.get_num_threads(), sorted({i.get('architecture') for i in "
         "threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas'}), "
         "'loop' if conv_plan.winograd_loop_gemm(16, 16) else 'blas')")


def orders(quick=False):
    """(environment, gemm) pairs: 4 kernels x 3 thread settings, and 2 more thread counts
    on the detected kernel, each with both GEMMs (28); --quick: 3."""
    if quick:
        return [({}, "loop"), (dict(KERNELS[1], **THREADS[2]), "loop"), ({}, "blas")]
    envs = [dict(k, **t) for k, t in itertools.product(KERNELS, THREADS)] + MORE_THREADS
    return [(env, gemm) for gemm in GEMMS for env in envs]


def describe(env, gemm):
    return " ".join([f"{k}={v}" for k, v in env.items()] or ["detected"]) + f", {gemm} GEMMs"


def failures(notebook, env, gemm, cwd):
    """Run `notebook` and its solutions in a kernel with `env` added and the `gemm` order.
    Returns (errors, seen): the (first line of the cell, error name, value) of every cell
    that raised, and what the kernel reported of its order: "threads [OpenBLAS kernels]
    loop|blas"."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ran = []

    def solve_and_probe(client, nb):
        ran.extend(lessons.run_solutions(client, nb, notebook))
        probe = nbformat.v4.new_code_cell(PROBE)
        client.nb = nbformat.v4.new_notebook(cells=[probe])
        try:
            client.execute_cell(probe, 0)
        finally:
            client.nb = nb
        ran.append(probe)
    try:
        nb = nbformat.read(notebook, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell(BLAS_GEMMS if gemm == "blas"
                                                     else LOOP_GEMMS))
        path = Path(cwd) / Path(notebook).name
        nbformat.write(nb, path)
        nb = lessons.execute(path, cwd, then=solve_and_probe)
    except CellExecutionError as error:        # a lesson cell raised: the run stops there
        source = str(error).split("-" * 18 + "\n")
        return [(source[1].splitlines()[0] if len(source) > 1 else "", error.ename,
                 error.evalue)], "stopped at the failing cell"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    lesson = [c for c in nb.cells if "check" not in lessons.tags(c)]
    errors = [(c.source.splitlines()[0] if c.source else "", o.ename, o.evalue)
              for c in lesson + ran for o in c.get("outputs", []) if o.output_type == "error"]
    streams = [o.text for o in ran[-1].get("outputs", []) if o.output_type == "stream"]
    return errors, "".join(streams).strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 orders instead of 22")
    parser.add_argument("--out", default=str(lessons.HERE.parent / "build" / "orders"))
    parser.add_argument("which", nargs="+", help="notebook numbers, e.g. 05 08")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [p for p in lessons.NOTEBOOKS if p.stem[:2] in args.which]
    failed = 0
    for notebook in chosen:
        for env, gemm in orders(args.quick):
            errors, seen = failures(notebook, env, gemm, out)
            failed += bool(errors)
            print(f"{notebook.stem}  {describe(env, gemm)} (ran: {seen}): "
                  f"{'ok' if not errors else f'{len(errors)} failed'}", flush=True)
            for first_line, name, value in errors:
                print(f"    {first_line[:70]!r}: {name}: {value[:120]}")
    print(f"{failed} lesson run(s) with a failure")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
