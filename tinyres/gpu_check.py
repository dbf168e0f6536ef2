"""One command for a lent GPU: `python -m tinyres.gpu_check [--out gpu_check.json]`.

In one run, meant to finish within ten minutes on an H100/H200, from a source checkout:
1. the device, driver, CUDA, NVRTC, CuPy and PyTorch versions (each probe on its own, so
   a machine with only the driver, CuPy and PyTorch still reports what it has);
2. `pytest -m gpu tests` (every GPU test, four workers where pytest-xdist is installed);
3. benchmarks/conv_bench.py in strict FP32: every resnet20/resnet50 convolution beside
   cuDNN through PyTorch, outputs checked against PyTorch's, and the resnet50 (batch 64)
   and resnet20 (batch 128) training steps beside PyTorch eager;
4. compute-sanitizer memcheck and racecheck on every CUDA kernel at a small size, when
   the tool is on PATH;
5. conv_bench.py again in TF32 on both sides;
6. benchmarks/gpu_model.py, the roofline predictions to set beside those measurements.
Everything goes into one JSON file with the git commit (or --commit, for a copied tree
with no .git), and each step's whole output into gpu_check_files/steps.log beside it.
Each step runs in a subprocess with a time limit taken from a shared budget (--budget),
in the order above (the goals' measurements before the rest), and a step that fails is
recorded and the next one still runs. Exit status: 0 when every step passed, 1 when one
failed, 2 when there is no GPU (the reason is printed; nothing else runs).
"""
import argparse
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from tinyres import gpu_probe

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUDGET_S = 570           # the whole run, under ten minutes
COMMIT_VARIABLE = "TINYRES_COMMIT"   # the commit for the steps (benchmarks/_timing.py)
TAIL = 4000              # characters of each step's output kept in the JSON


def _try(fn):
    """fn()'s value, or 'unavailable: <error>' (a probe never stops the check)."""
    try:
        return fn()
    except Exception as err:  # any missing library or driver call
        return f"unavailable: {type(err).__name__}: {err}"


def _cupy_versions():
    import cupy
    from cupy.cuda import nvrtc, runtime
    props = runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    return {"device": name.decode() if isinstance(name, bytes) else name,
            "compute_capability": f"{props['major']}.{props['minor']}",
            "memory_gb": round(props["totalGlobalMem"] / 2**30, 1),
            "device_count": runtime.getDeviceCount(),
            "cuda_driver": runtime.driverGetVersion(),
            "cuda_runtime": runtime.runtimeGetVersion(),
            "nvrtc": ".".join(map(str, nvrtc.getVersion())), "cupy": cupy.__version__}


def float32_gemm_errors():
    """{"2-D", "batched", "shared weight"}: the largest relative error of CuPy's float32
    matmul (one 2-D GEMM; a strided batch; one 2-D weight against a 3-D batch, the
    pointer-array route the convolutions take, kernels/nchw_conv.py) against float64, in
    this process's settings, and CuPy's float32 compute type: about 1e-6 is strict FP32,
    about 1e-3 TF32."""
    import cupy
    import numpy as np
    from cupy._core import _routines_linalg as linalg
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 256, 2304)), rng.standard_normal((4, 2304, 64))
    want = a @ b
    errors = {}
    cases = (("2-D", a[0], b[0], want[0]), ("batched", a, b, want),
             ("shared weight", b[0].T, a.transpose(0, 2, 1), b[0].T @ a.transpose(0, 2, 1)))
    for name, lhs, rhs, ref in cases:
        got = cupy.asnumpy(cupy.matmul(cupy.asarray(lhs, np.float32),
                                       cupy.asarray(rhs, np.float32)))
        errors[name] = float(np.abs(got - ref).max() / np.abs(ref).max())
    errors["compute_type"] = linalg.compute_type_to_str(
        linalg.get_compute_type(np.dtype(np.float32)))
    return errors


def _torch_versions():
    import torch
    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "torch_cuda_available": torch.cuda.is_available(),
            "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}


def _nvidia_smi():
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                           "--format=csv,noheader"], capture_output=True, text=True,
                          timeout=30)
    return done.stdout.strip() or done.stderr.strip()


def versions():
    """Every version the check can find; a failed probe says why in place of its value."""
    import numpy
    return {"python": sys.version.split()[0], "numpy": numpy.__version__,
            "cupy": _try(_cupy_versions), "torch": _try(_torch_versions),
            "cupy_float32_gemm": _try(float32_gemm_errors),
            "nvidia_smi": _try(_nvidia_smi) if shutil.which("nvidia-smi") else "not found",
            "compute_sanitizer": shutil.which("compute-sanitizer") or "not found"}


def commit():
    """The git commit of the checkout (with '+dirty' for local changes), or 'unknown'."""
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                              text=True, timeout=30).stdout.strip()
    sha = _try(lambda: git("rev-parse", "HEAD"))
    if not sha or sha.startswith("unavailable"):
        return "unknown"
    return sha + ("+dirty" if _try(lambda: git("status", "--porcelain")) else "")


def run_step(cmd, timeout, runner=subprocess.run, log=None, env=None):
    """{"cmd", "rc", "seconds", "ok", "tail"} of one subprocess (in environment `env`, or
    this one's), killed after timeout s; its whole output is appended to the file `log`
    where one is given."""
    start = time.monotonic()
    try:
        done = runner(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout,
                      env=env)
        rc, out = done.returncode, (done.stdout or "") + (done.stderr or "")
    except subprocess.TimeoutExpired as err:
        rc, out = "timeout", f"killed after {timeout:.0f} s\n{err.stdout or ''}"
    except OSError as err:
        rc, out = "not run", f"{type(err).__name__}: {err}"
    out = out if isinstance(out, str) else out.decode(errors="replace")
    if log is not None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"\n===== {' '.join(map(str, cmd))}\n===== rc {rc}\n{out}")
    return {"cmd": cmd, "rc": rc, "seconds": round(time.monotonic() - start, 1),
            "ok": rc == 0, "tail": out[-TAIL:]}


def small_kernel_run():
    """Every CUDA kernel once at a small size (what the sanitizers watch)."""
    import cupy
    import numpy as np
    from tinyres.kernels import cuda
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = cupy.asarray(rng.standard_normal((2, 3, 9, 7)).astype(dtype))
        cols = cuda.im2col(x, 3, 3, 2, 1, 1, 1)
        cuda.col2im(cols, x.shape, 3, 3, 2, 1, 1, 1)
        y, idx = cuda.maxpool_forward(x, 3, 3, 2, 2, 1, 1)
        cuda.maxpool_backward(y, idx, x.shape, 3, 3, 2, 2, 1, 1)
        w, b = cupy.ones(3, dtype), cupy.zeros(3, dtype)
        y, mean, invstd = cuda.batchnorm_forward(x, w, b, cupy.zeros(3, dtype),
                                                 cupy.ones(3, dtype), 0.1, 1e-5)
        cuda.batchnorm_backward(y, x, w, mean, invstd)
        cuda.relu_backward(cuda.relu_forward(x), x)
    cupy.cuda.Device().synchronize()


def steps(out_dir):
    """[(name, command, time cap in s)] of the check, in order."""
    py = sys.executable
    bench = ROOT / "benchmarks"
    workers = ["-n", "4"] if importlib.util.find_spec("xdist") else []
    plan = [("pytest -m gpu", [py, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p",
                               "no:cacheprovider", *workers, str(ROOT / "tests")], 200)]
    def conv_bench(mode, extra, cap):
        return (f"conv_bench {mode}", [py, str(bench / "conv_bench.py"), *extra,
                                       "--json", str(out_dir / f"conv_{mode}.json")], cap)
    plan.append(conv_bench("fp32", [], 160))       # the goals' measurements, before the rest
    sanitizer = shutil.which("compute-sanitizer")
    if sanitizer:
        for tool in ("memcheck", "racecheck"):
            plan.append((f"compute-sanitizer {tool}",
                         [sanitizer, "--tool", tool, "--error-exitcode", "1", py, "-m",
                          "tinyres.gpu_check", "--small-kernels"], 45))
    plan.append(conv_bench("tf32", ["--tf32"], 140))
    plan.append(("gpu_model", [py, str(bench / "gpu_model.py"), "--json",
                               str(out_dir / "gpu_model.json")], 30))
    return plan


def assemble(verdict, found_versions, sha, results, attachments):
    """The JSON document of a check: what was found, each step, the benchmark files."""
    action, reason = verdict
    return {"commit": sha, "verdict": action, "reason": reason, "versions": found_versions,
            "steps": results, "results": attachments,
            "ok": action == "run" and bool(results) and all(r["ok"] for r in results.values())}


def _attachments(out_dir):
    found = {}
    for path in sorted(out_dir.glob("*.json")):
        found[path.stem] = _try(lambda: json.loads(path.read_text(encoding="utf-8")))
    return found


def check(out_path, budget=BUDGET_S, verdict=gpu_probe.gpu_verdict, sha=None):
    """Run the whole check, write the JSON to out_path; return the exit status. sha: the
    commit to record where the checkout cannot say (a copied tree has no .git)."""
    action, reason = verdict()
    found = versions()
    # the steps get the commit given: the benchmarks' own git lookup reads the copied tree
    env = {**os.environ, COMMIT_VARIABLE: sha} if sha else None
    sha = sha or commit()
    print(f"tinyres gpu_check, commit {sha}")
    print(json.dumps(found, indent=1))
    results, out_dir = {}, pathlib.Path(out_path).resolve().parent / "gpu_check_files"
    if action == "skip":
        print(f"gpu_check: no GPU here: {reason}. Nothing was run.", file=sys.stderr)
    else:
        if action == "fail":
            print(f"gpu_check: the GPU stack is broken: {reason}; running anyway",
                  file=sys.stderr)
        out_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + budget
        for name, cmd, cap in steps(out_dir):
            left = deadline - time.monotonic()
            if left < 10:
                results[name] = {"cmd": cmd, "rc": "not run", "ok": False,
                                 "seconds": 0, "tail": "out of time"}
                continue
            results[name] = run_step(cmd, min(cap, left), log=out_dir / "steps.log", env=env)
            print(f"[{'ok' if results[name]['ok'] else 'FAILED'}] {name} "
                  f"({results[name]['seconds']} s)\n{results[name]['tail'][-1500:]}")
    doc = assemble((action, reason), found, sha, results,
                   _attachments(out_dir) if out_dir.exists() else {})
    pathlib.Path(out_path).write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    print(f"gpu_check: wrote {out_path}; {'all passed' if doc['ok'] else 'NOT all passed'}")
    return 2 if action == "skip" else (0 if doc["ok"] else 1)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinyres.gpu_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="the JSON file to write")
    parser.add_argument("--small-kernels", action="store_true",
                        help="only run every kernel once at a small size (for the sanitizers)")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help=f"seconds for all steps together (default {BUDGET_S})")
    parser.add_argument("--commit", help="the commit to record (for a tree with no .git)")
    args = parser.parse_args(argv)
    if args.small_kernels:
        small_kernel_run()
        return 0
    return check(args.out, budget=args.budget, sha=args.commit)


if __name__ == "__main__":
    sys.exit(main())
