"""How tinyres sets up the CPU runtime of its process, once, when it is imported.

Two settings, each measured on the resnet20 training step on 2 cores
(benchmarks/README.md), and each skipped where the user has already chosen:

- OpenBLAS's idle threads keep spinning for a while after each GEMM; between GEMMs the
  Numba kernels (im2col, batch norm, ReLU) then share the cores with those spinning
  threads. `OPENBLAS_THREAD_TIMEOUT=4` (2**4 cycles, OpenBLAS's minimum) made the step
  about 20% faster. OpenBLAS reads it once, when NumPy is first imported: it takes effect
  when tinyres is imported first, as by `python -m tinyres`.
- glibc's malloc hands arrays above a threshold straight to mmap and returns them to the
  system when freed, so every new activation of a few MB pays its page faults again. A
  fixed mmap threshold of 32 MB (glibc's maximum) and no trimming keep freed blocks for
  reuse: the step was again about 15-20% faster. Set through mallopt, on glibc only, unless
  MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ is in the environment.

Set TINYRES_KEEP_RUNTIME=1 to leave both alone. Two more settings live with the kernels,
in tinyres/kernels/cpu.py: the Numba threading layer, chosen when that module is imported,
and SciPy's own BLAS (which np.dot calls inside Numba), held to one thread at the first
convolution because the convolution's GEMMs run inside Numba's threads; with
TINYRES_KEEP_RUNTIME=1 that BLAS is left alone and convolutions take the one-GEMM path.
"""
import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # glibc's mallopt parameters
MMAP_THRESHOLD = 32 * 1024 * 1024                      # glibc's largest allowed value
TRIM_THRESHOLD = 2**31 - 1


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


def configure():
    """Apply the settings above (once per process; a user's own choices win)."""
    if os.environ.get("TINYRES_KEEP_RUNTIME") == "1":
        return
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    _tune_malloc()
