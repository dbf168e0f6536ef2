"""The process settings of the benchmark workers, and what each worker ran on.

Like with like: every engine's worker process gets the same environment, built here from
the parent's by `worker_env`:

- allocator, `--alloc`: "default" leaves glibc's malloc at its own defaults (every
  MALLOC_* variable removed); "tuned" gives every worker MALLOC_MMAP_THRESHOLD_=33554432
  and MALLOC_TRIM_THRESHOLD_=2147483647, the values tinyres.runtime.tune() sets through
  mallopt (tune() leaves malloc alone when these variables are set).
- BLAS detection, `--blas-env`: "detect" removes OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE,
  so that OpenBLAS picks its kernels from the CPU it finds, as on a user's machine;
  "inherit" keeps whatever the parent had.

`worker_info`, called inside a worker after its work, records what the process actually
ran on: the BLAS and OpenMP libraries threadpoolctl finds loaded (OpenBLAS's
`architecture` is the kernel set it chose), Numba's threading layer and thread count,
torch's thread count, oneDNN availability and build (BLAS, CPU capability), and the
allocator, BLAS, OpenMP and Numba variables of its environment.
"""
import os
import re
import sys

ALLOC_SETTINGS = ("default", "tuned")
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "2147483647"}
BLAS_ENV_SETTINGS = ("detect", "inherit")
BLAS_DETECTION_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
ENV_GROUPS = {"malloc": ("MALLOC_", "GLIBC_TUNABLES"), "openblas": ("OPENBLAS_", "GOTO"),
              "openmp": ("OMP_", "KMP_", "GOMP_", "MKL_"), "numba": ("NUMBA_",),
              "torch": ("TORCH", "ATEN_")}


# ----- the environment of a worker ------------------------------------------------------
def worker_env(base, alloc, blas_env):
    """The environment of every worker under one setting: a copy of `base` with the
    allocator variables set or removed (`alloc`) and OpenBLAS's CPU overrides removed
    (`blas_env` "detect") or kept ("inherit")."""
    if alloc not in ALLOC_SETTINGS:
        raise ValueError(f"alloc must be one of {ALLOC_SETTINGS}, got {alloc!r}")
    if blas_env not in BLAS_ENV_SETTINGS:
        raise ValueError(f"blas_env must be one of {BLAS_ENV_SETTINGS}, got {blas_env!r}")
    env = {k: v for k, v in base.items() if not k.startswith("MALLOC_")}
    if alloc == "tuned":
        env.update(MALLOC_TUNED)
    if blas_env == "detect":
        for name in BLAS_DETECTION_VARIABLES:
            env.pop(name, None)
    return env


def removed_blas_variables(base, blas_env):
    """The OpenBLAS overrides the parent has and the workers do not get."""
    if blas_env != "detect":
        return {}
    return {k: base[k] for k in BLAS_DETECTION_VARIABLES if k in base}


def rerun_without_blas_variables(blas_env, script, argv):
    """`--blas-env detect` for a script that runs its work in its own process: where the
    environment pins OpenBLAS's kernel (BLAS_DETECTION_VARIABLES), start `script` again
    with `argv` without them (os.execve: this process becomes the new one), so that
    OpenBLAS picks its kernel from the CPU it finds. Returns where nothing is pinned, or
    with "inherit"."""
    if blas_env not in BLAS_ENV_SETTINGS:
        raise ValueError(f"blas_env must be one of {BLAS_ENV_SETTINGS}, got {blas_env!r}")
    if blas_env == "detect" and any(k in os.environ for k in BLAS_DETECTION_VARIABLES):
        env = {k: v for k, v in os.environ.items() if k not in BLAS_DETECTION_VARIABLES}
        os.execve(sys.executable, [sys.executable, os.path.abspath(script)] + list(argv), env)


def env_groups(environ):
    """The variables of `environ` that change how an engine runs, grouped."""
    return {group: {k: v for k, v in sorted(environ.items()) if k.startswith(prefixes)}
            for group, prefixes in ENV_GROUPS.items()}


def settings_lines(alloc_settings, blas_env, removed, threads, tinyres_tune,
                   buffer_cache=True):
    """The header lines that say which process settings the workers ran with."""
    tuned = " ".join(f"{k}={v}" for k, v in MALLOC_TUNED.items())
    gone = (" (the parent's " + ", ".join(f"{k}={v}" for k, v in removed.items())
            + " not passed on)") if removed else ""
    blas = ("kernels picked by the BLAS's own CPU detection: "
            + " and ".join(BLAS_DETECTION_VARIABLES)
            + " removed from every worker's environment" + gone
            if blas_env == "detect" else "environment inherited: the workers get the "
            "parent's OPENBLAS_* variables as they are")
    lines = [f"workers: allocator {' and '.join(alloc_settings)} (default = glibc's own, "
             f"no MALLOC_* variables; tuned = {tuned}), the same for every engine",
             f"workers: BLAS {blas}",
             f"workers: {threads} threads for every engine (torch.set_num_threads, "
             "numba.set_num_threads, the BLAS pools through threadpoolctl)"]
    if tinyres_tune:
        lines.append("workers: tinyres's also call tinyres.runtime.tune() (tinyres only: "
                     "not like with like)")
    if not buffer_cache:
        lines.append("workers: tinyres's large arrays from np.empty, its buffer cache "
                     "switched off (tinyres.kernels.buffers.enable(False))")
    return lines


# ----- what a worker ran on ---------------------------------------------------------------
def _threadpools():
    """threadpoolctl's view of the loaded BLAS and OpenMP libraries."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"blas": [], "openmp": []}
    keys = ("internal_api", "version", "architecture", "num_threads", "filepath")
    pools = {"blas": [], "openmp": []}
    for lib in threadpool_info():
        if lib.get("user_api") in pools:
            pools[lib["user_api"]].append({k: lib.get(k) for k in keys})
    return pools


def numba_target():
    """The CPU Numba compiles for and whether that includes AVX-512: NUMBA_CPU_NAME and
    NUMBA_CPU_FEATURES where set, else the host's, as LLVM reads them (Numba's default)."""
    import llvmlite.binding as llvm
    from numba.core import config
    name = config.CPU_NAME or llvm.get_host_cpu_name()
    features = config.CPU_FEATURES
    if features is None:
        features = ",".join(f"{'+' if on else '-'}{f}"
                            for f, on in sorted(llvm.get_host_cpu_features().items()))
    enabled = {f[1:] for f in features.split(",") if f.startswith("+")}
    return {"cpu_name": name, "avx512": "avx512f" in enabled, "avx2": "avx2" in enabled}


def _numba_info():
    """Numba's version, thread count, threading layer and compile target; None where Numba
    is not loaded."""
    if "numba" not in sys.modules:
        return None
    import numba
    try:
        layer = numba.threading_layer()
    except ValueError:                       # no parallel region has run yet
        layer = "none (no parallel call yet)"
    return {"version": numba.__version__, "num_threads": numba.get_num_threads(),
            "threading_layer": layer, "target": numba_target()}


def target_text(target):
    """Numba's compile target in a few words: 'znver3 AVX2' or 'znver5 AVX-512'."""
    if not target:
        return ""
    simd = "AVX-512" if target.get("avx512") else "AVX2" if target.get("avx2") else "no AVX2"
    return f" {target.get('cpu_name', '?')} {simd}"


def torch_build_summary(config_text):
    """The short form of torch.__config__.show(): its BLAS, the MKL and oneDNN versions and
    the CPU capability it was built to use, where the text names them."""
    patterns = {"blas": r"BLAS_INFO=(\w+)",
                "mkl": r"Math Kernel Library Version ([\w.]+)",
                "onednn": r"(?:MKL-DNN|oneDNN) (v[\w.]+)",
                "cpu_capability": r"CPU capability usage: (\w+)"}
    found = {k: re.search(rx, config_text) for k, rx in patterns.items()}
    return {k: m.group(1) for k, m in found.items() if m}


def _torch_info():
    """torch's threads, oneDNN and build; None where torch is not loaded."""
    if "torch" not in sys.modules:
        return None
    import torch
    return {"version": torch.__version__, "num_threads": torch.get_num_threads(),
            "num_interop_threads": torch.get_num_interop_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "build": torch_build_summary(torch.__config__.show())}


def worker_info(engine, threads=None):
    """What this process ran on, measured here (call it in the worker, after its work)."""
    pools = _threadpools()
    return {"engine": engine, "pid": os.getpid(), "threads_requested": threads,
            "blas": pools["blas"], "openmp": pools["openmp"], "numba": _numba_info(),
            "torch": _torch_info(), "env": env_groups(os.environ)}


def _pool_text(lib):
    version = lib.get("version") or os.path.basename(lib.get("filepath") or "?")
    kernel = f" {lib['architecture']}" if lib.get("architecture") else ""
    return f"{lib['internal_api']} {version}{kernel} x{lib['num_threads']}"


def summary_line(label, info):
    """One line: the BLAS kernels, thread pools and allocator an engine's worker had."""
    if not info:
        return f"{label}: not measured (its worker failed before reporting)"
    parts = []
    if info.get("torch"):
        t = info["torch"]
        build = t.get("build", {})
        parts.append(f"torch {t['num_threads']} threads, {t['cpu_capability']}, BLAS "
                     f"{build.get('blas', '?')}, oneDNN {build.get('onednn', '?')} "
                     f"({'available' if t['mkldnn'] else 'not available'})")
    if info.get("numba"):
        n = info["numba"]
        parts.append(f"Numba {n['threading_layer']} x{n['num_threads']}"
                     f"{target_text(n.get('target'))}")
    parts.append("BLAS " + (", ".join(_pool_text(lib) for lib in info["blas"]) or "none seen"))
    if info.get("openmp"):
        parts.append("OpenMP " + ", ".join(_pool_text(lib) for lib in info["openmp"]))
    malloc = info["env"]["malloc"]
    parts.append("malloc " + (" ".join(f"{k}={v}" for k, v in malloc.items()) or "default"))
    coretype = info["env"]["openblas"].get("OPENBLAS_CORETYPE")
    parts.append(f"OPENBLAS_CORETYPE={coretype}" if coretype else "BLAS detection own")
    return f"{label}: " + "; ".join(parts)
