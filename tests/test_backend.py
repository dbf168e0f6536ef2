"""Devices without a GPU: asking about CUDA answers False without raising, asking for it
explicitly raises an error that says what is missing; and the process settings of
tinyres.runtime.tune(), which yield to the user's own; importing tinyres changes none of them."""
import importlib.metadata
import json
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
    assert backend.device_of(x) == tinyres.device("cpu") and tinyres.Tensor(x).device.type == "cpu"


IMPORT_PROBE = """
import os, json, numba
before = (dict(os.environ), list(numba.config.THREADING_LAYER_PRIORITY))
import tinyres, tinyres.kernels.cpu
after = (dict(os.environ), list(numba.config.THREADING_LAYER_PRIORITY))
print(json.dumps([before == after, after[1]]))
"""


def test_importing_tinyres_changes_nothing_outside_it():
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("NUMBA_THREADING", "OPENBLAS_THREAD_TIMEOUT"))}
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True,
                         text=True, check=True, env=full).stdout
    unchanged, priority = json.loads(out)
    assert unchanged, "import tinyres changed the environment or Numba's threading order"
    assert priority != tinyres.runtime.THREADING_LAYER_PRIORITY      # Numba's own order


TBB_PROBE = """
import numba, numpy as np, tinyres, tinyres.nn.functional as F
F.conv2d(tinyres.randn(2, 8, 8, 8), tinyres.randn(8, 8, 3, 3), padding=1)
print(numba.threading_layer())
"""


def _tbb_installed():
    try:
        importlib.metadata.version("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not (sys.platform.startswith("linux") and _tbb_installed()),
                    reason="TBB is a dependency on Linux x86-64 only")
def test_numba_runs_on_the_tbb_that_pip_installed():
    # pip puts libtbb in the environment's lib/, where the loader does not look: without
    # runtime.find_tbb() Numba falls back to OpenMP here, silently
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("NUMBA_THREADING", "LD_LIBRARY_PATH", "LD_PRELOAD"))}
    out = subprocess.run([sys.executable, "-c", TBB_PROBE], capture_output=True, text=True,
                         check=True, env=clean).stdout.split()
    assert out[-1] == "tbb", f"Numba's thread pool is {out[-1]!r}, not TBB's"


def test_tune_says_what_it_changed_and_yields_to_the_user():
    code = ("import json, numba, tinyres; lines = tinyres.runtime.tune(); "
            "print(json.dumps([lines, list(numba.config.THREADING_LAYER_PRIORITY)]))")
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("NUMBA_THREADING", "OPENBLAS_THREAD_TIMEOUT", "MALLOC_"))}
    lines, priority = json.loads(subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env=full).stdout)
    assert priority == tinyres.runtime.THREADING_LAYER_PRIORITY
    assert any(line.startswith("Numba thread pools, in order: tbb") for line in lines)
    assert any("OPENBLAS_THREAD_TIMEOUT=4 before" in line for line in lines)
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert "glibc malloc: mmap threshold 32 MB, no trimming" in lines
    chosen = {**full, "NUMBA_THREADING_LAYER": "workqueue", "MALLOC_TRIM_THRESHOLD_": "1"}
    lines, priority = json.loads(subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env=chosen).stdout)
    assert priority != tinyres.runtime.THREADING_LAYER_PRIORITY
    assert any(line.startswith("glibc malloc: left as it is") for line in lines)


BLAS_PROBE = """
import numpy as np, scipy, json, tinyres, tinyres.nn.functional as F
from threadpoolctl import threadpool_info
from tinyres.kernels import conv_plan
def threads():
    scipy_dir = scipy.__file__.rsplit('/', 1)[0]
    return sorted((lib['filepath'].startswith(scipy_dir), lib['num_threads'])
                  for lib in threadpool_info() if lib['user_api'] == 'blas')
own_blas = conv_plan.scipy_blas() is not None     # loads SciPy's BLAS, changes nothing
before = threads()
x, w = tinyres.randn(4, 16, 16, 16), tinyres.randn(16, 16, 3, 3, requires_grad=True)
plan = conv_plan.conv_algorithm(x.shape, w.shape, 1, 1)
F.conv2d(x, w, padding=1).sum().backward()
print(json.dumps([before, threads(), plan.forward, own_blas]))
"""


def test_a_convolution_leaves_every_blas_thread_count_as_it_was():
    pytest.importorskip("threadpoolctl")
    full = {k: v for k, v in os.environ.items()
            if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    before, after, forward, own_blas = json.loads(subprocess.run(
        [sys.executable, "-c", BLAS_PROBE], capture_output=True, text=True, check=True,
        env=full).stdout)
    assert before == after and before
    if own_blas and os.cpu_count() > 1:
        assert [True, 1] not in before        # SciPy's BLAS runs several threads here
        assert forward == "winograd-4x4-lanes"    # GEMMs inside Numba's threads did run
