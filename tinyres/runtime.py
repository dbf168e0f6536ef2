"""Process-wide CPU settings that make tinyres faster, applied only when asked for.

Importing tinyres changes no setting outside tinyres; it does one thing for its own
dependency: setup.py installs TBB for Numba's thread pool, and pip puts TBB's library in
the environment's lib/ folder, where the dynamic loader does not look (a conda
environment's loader does). Numba then cannot load its TBB pool and silently takes GNU
OpenMP's, whose spinning threads fight OpenBLAS's (measured in benchmarks/README.md,
"How the CPU layer picks a convolution"). find_tbb() loads that library by its path at
import, so that Numba finds it by name: Numba's own order, which tries TBB first, then
works as intended.

`tinyres.runtime.tune()` makes the changes below and returns one line for each thing it
changed or could not change; `python -m tinyres train` calls it unless given --no-tune,
and prints those lines. What each setting buys, measured on the resnet20 training step,
is in benchmarks/README.md ("Process settings").

- glibc's malloc hands arrays above a threshold straight to mmap and gives them back to
  the system when freed, so every new activation of a few MB pays its page faults again.
  A fixed mmap threshold of 32 MB (glibc's largest) and no trimming keep freed blocks for
  reuse. Set through mallopt, on glibc only, unless MALLOC_MMAP_THRESHOLD_ or
  MALLOC_TRIM_THRESHOLD_ is in the environment (the user's own choice wins).
- Numba's thread pool: TBB where it is installed, else the workqueue pool, and GNU OpenMP
  last, whose spinning threads were measured fighting OpenBLAS's. Numba's own order puts
  OpenMP second, which only matters where TBB is missing. Set unless NUMBA_THREADING_LAYER
  or NUMBA_THREADING_LAYER_PRIORITY is in the environment, and only before Numba's first
  parallel call.
- OpenBLAS's idle threads spin for a while after each GEMM, sharing the cores with the
  Numba kernels between GEMMs; OPENBLAS_THREAD_TIMEOUT=4 shortens the spin. OpenBLAS reads
  it once, when NumPy starts, so tune() can only report it: export it before Python starts.
"""
import ctypes
import os
import site
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # glibc's mallopt parameters
MMAP_THRESHOLD = 32 * 1024 * 1024                      # glibc's largest allowed value
TRIM_THRESHOLD = 2**31 - 1
THREADING_LAYER_PRIORITY = ["tbb", "workqueue", "omp"]
TBB_LIBRARY = "libtbb.so.12"          # the name Numba's TBB pool is linked against (Linux)


def find_tbb():
    """Load the TBB library that pip put in this environment's lib/ folder (or the user
    folder's), so that Numba's TBB pool, linked against it by name, can load. Returns the
    path loaded, or None where there is none (not Linux, no tbb package)."""
    if not sys.platform.startswith("linux"):
        return None
    for prefix in (sys.prefix, site.getuserbase()):
        path = os.path.join(prefix, "lib", TBB_LIBRARY)
        if os.path.exists(path):
            try:
                ctypes.CDLL(path)
            except OSError:             # a broken install: Numba reports it as before
                return None
            return path
    return None


def _tune_malloc():
    """Fixed mmap threshold and no trimming, through glibc's mallopt; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    if {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):       # not glibc
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _tune_numba_threading():
    """Numba's thread-pool order above; False where the user chose or a pool already runs."""
    if {"NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"} & set(os.environ):
        return False
    import numba
    from numba.np.ufunc import parallel
    if getattr(parallel, "_is_initialized", False):
        return False
    numba.config.THREADING_LAYER_PRIORITY = list(THREADING_LAYER_PRIORITY)
    return True


def tune():
    """Apply the settings above to this process; returns what was done, one line each."""
    lines = []
    if _tune_malloc():
        lines.append(f"glibc malloc: mmap threshold {MMAP_THRESHOLD >> 20} MB, no trimming")
    else:
        lines.append("glibc malloc: left as it is (not glibc, or MALLOC_*_ set by the user)")
    if _tune_numba_threading():
        lines.append(f"Numba thread pools, in order: {', '.join(THREADING_LAYER_PRIORITY)}")
    else:
        lines.append("Numba thread pool: left as it is (chosen by the user, or already running)")
    timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    if timeout is None:
        lines.append("OpenBLAS spin: not changed (export OPENBLAS_THREAD_TIMEOUT=4 before "
                     "starting Python to shorten it)")
    else:
        lines.append(f"OpenBLAS spin: OPENBLAS_THREAD_TIMEOUT={timeout}, from the environment")
    return lines


def compiled_kernel_cache():
    """(warm, folder): whether Numba's on-disk cache already holds the main CPU kernels,
    and where it is (next to the kernels, else Numba's user-wide cache folder, or
    NUMBA_CACHE_DIR). Looks only; compiles nothing."""
    from tinyres.kernels import cpu, weight_grad, winograd
    kernels = (cpu._conv2d_forward_core, cpu._plane_stats, cpu._relu_forward_core,
               winograd.forward_core, weight_grad._weight_grad_core)
    try:
        caches = [k._cache for k in kernels]
        indexes = [c._cache_file._index_path for c in caches]
        folder = caches[0]._cache_path
    except AttributeError:        # Numba's cache internals moved: say nothing
        return True, None
    return all(os.path.exists(path) for path in indexes), folder


# ----- torch.set_num_threads / get_num_threads ------------------------------------------
_num_threads = None     # what set_num_threads was given; None: the pools' own defaults


def set_num_threads(num):
    """torch.set_num_threads: how many threads tinyres's CPU work may use, i.e. Numba's
    parallel loops (at most the NUMBA_NUM_THREADS it started with; Numba keeps the count
    per calling thread) and the BLAS's pool (through threadpoolctl). Errors as torch's."""
    global _num_threads
    import numba
    import numpy as np
    import threadpoolctl
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)):
        raise RuntimeError(f"set_num_threads expects an int, but got {type(num).__name__}")
    if num <= 0:
        raise RuntimeError("set_num_threads expects a positive integer")
    numba.set_num_threads(min(int(num), numba.config.NUMBA_NUM_THREADS))
    threadpoolctl.threadpool_limits(limits=int(num), user_api="blas")
    _num_threads = int(num)


def get_num_threads():
    """torch.get_num_threads: the count set_num_threads was given, else Numba's."""
    import numba
    return _num_threads if _num_threads is not None else numba.get_num_threads()
