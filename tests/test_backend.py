"""Devices without a GPU: asking about CUDA answers False without raising; asking for it
explicitly raises an error that says what is missing; ops refuse mixed devices."""
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
