"""Devices without a GPU: asking about CUDA answers False without raising, asking for it
explicitly raises an error that says what is missing; and the process settings of
tinyres.runtime, which yield to the user's own."""
import os
import platform
import re
import subprocess
import sys

import numpy as np
import pytest

import tinyres
from tinyres import backend


def test_cuda_is_available_answers_without_raising():
    assert tinyres.cuda.is_available() in (True, False)
    if not tinyres.cuda.is_available():
        assert isinstance(tinyres.cuda.why_unavailable(), str)


@pytest.mark.skipif(tinyres.cuda.is_available(), reason="a GPU is usable here")
def test_explicit_cuda_request_names_what_is_missing():
    reason = tinyres.cuda.why_unavailable()
    with pytest.raises(RuntimeError, match="device 'cuda' was requested but"):
        tinyres.tensor([1.0, 2.0], device="cuda")
    with pytest.raises(RuntimeError, match=re.escape(reason)):
        tinyres.zeros(3).to("cuda")


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        tinyres.tensor([1.0], device="tpu")


def test_importing_tinyres_does_not_import_cupy():
    code = "import sys, tinyres; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_cpu_arrays_use_numba_kernels_and_numpy():
    x = np.zeros((1, 1, 2, 2), dtype=np.float32)
    assert backend.get_array_module(x) is np
    assert backend.kernels_for(x).__name__ == "tinyres.kernels.cpu"
    assert backend.device_of(x) == "cpu" and tinyres.Tensor(x).device == "cpu"


def _env_after_import(**env):
    """OPENBLAS_THREAD_TIMEOUT as seen in a fresh process after `import tinyres`."""
    code = "import os, tinyres; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    full = {k: v for k, v in os.environ.items()
            if k not in ("OPENBLAS_THREAD_TIMEOUT", "TINYRES_KEEP_RUNTIME")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**full, **env}).stdout.strip()


def test_runtime_sets_a_short_openblas_spin_unless_the_user_chose():
    assert _env_after_import() == "4"
    assert _env_after_import(OPENBLAS_THREAD_TIMEOUT="9") == "9"
    assert _env_after_import(TINYRES_KEEP_RUNTIME="1") == "None"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_runtime_malloc_tuning_applies_on_glibc_and_yields_to_the_environment(monkeypatch):
    from tinyres import runtime
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert runtime._tune_malloc() is True
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert runtime._tune_malloc() is False


def _blas_threads_after_a_convolution(**env):
    """(NumPy's BLAS threads before, and after, SciPy's BLAS threads after, the CPU path)
    in a fresh process around one convolution large enough for per-image GEMMs."""
    code = """
import numpy as np, scipy, tinyres, tinyres.nn.functional as F
from threadpoolctl import threadpool_info
from tinyres.kernels import cpu
def threads(where):
    return min([lib['num_threads'] for lib in threadpool_info() if where(lib['filepath'])],
               default=0)
numpy_before = threads(lambda p: 'numpy' in p)
F.conv2d(tinyres.zeros(2, 3, 16, 16), tinyres.zeros(4, 3, 3, 3), padding=1)
scipy_dir = scipy.__file__.rsplit('/', 1)[0]
print(numpy_before, threads(lambda p: 'numpy' in p), threads(lambda p: p.startswith(scipy_dir)),
      cpu._per_image_gemms_usable())
"""
    full = {k: v for k, v in os.environ.items()
            if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "TINYRES_KEEP_RUNTIME")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**full, **env}).stdout.split()


def test_convolution_holds_scipys_own_blas_to_one_thread_and_leaves_numpys():
    pytest.importorskip("threadpoolctl")
    numpy_before, numpy_after, scipy_threads, per_image = _blas_threads_after_a_convolution()
    if per_image == "False":
        pytest.skip("SciPy's BLAS is not a library of its own here")
    assert scipy_threads == "1"
    assert numpy_after == numpy_before != "0"
    # with TINYRES_KEEP_RUNTIME=1 nothing is changed and the one-GEMM path is taken
    *_, per_image = _blas_threads_after_a_convolution(TINYRES_KEEP_RUNTIME="1")
    assert per_image == "False"
