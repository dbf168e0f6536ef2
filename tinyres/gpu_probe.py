"""Is there a GPU, and does the stack on it work? The decision behind `pytest -m gpu`.

Three answers, so that a broken install can never pass for a missing GPU:
- "skip": the GPU is explicitly absent: no NVIDIA driver (libcuda cannot be loaded, or
  only the toolkit's stub is there) or the driver sees no device (CUDA_ERROR_NO_DEVICE,
  e.g. CUDA_VISIBLE_DEVICES="").
- "fail": a driver and a device are there but something above them is broken: cuInit
  fails, CuPy cannot be imported, or CuPy's smoke computation fails
  (tinyres.cuda.why_unavailable() gives the reason).
- "run": everything works.

The probe of the driver goes through ctypes (no CuPy needed), and every probe can be
replaced by a stand-in, which is how tests/test_gpu_tooling.py checks the decision on a
machine without a GPU.
"""
import ctypes
import sys

CUDA_SUCCESS = 0
CUDA_ERROR_STUB_LIBRARY = 34
CUDA_ERROR_NO_DEVICE = 100
DRIVER_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"


def driver_status(load=ctypes.CDLL):
    """("absent", why), ("broken", why) or ("present", number of devices), from the CUDA
    driver library as `load` opens it."""
    try:
        lib = load(DRIVER_LIBRARY)
    except OSError as err:
        return "absent", f"no NVIDIA driver ({DRIVER_LIBRARY} cannot be loaded: {err})"
    rc = lib.cuInit(0)
    if rc == CUDA_ERROR_STUB_LIBRARY:
        return "absent", "only the CUDA stub driver is installed, no NVIDIA driver"
    if rc == CUDA_ERROR_NO_DEVICE:
        return "absent", "the NVIDIA driver sees no CUDA device (CUDA_ERROR_NO_DEVICE)"
    if rc != CUDA_SUCCESS:
        return "broken", f"the NVIDIA driver is installed but cuInit failed (CUDA error {rc})"
    count = ctypes.c_int(0)
    rc = lib.cuDeviceGetCount(ctypes.byref(count))
    if rc != CUDA_SUCCESS:
        return "broken", f"cuDeviceGetCount failed (CUDA error {rc})"
    if count.value < 1:
        return "absent", "the NVIDIA driver sees no CUDA device"
    return "present", count.value


def _stack_problem():
    from tinyres import cuda
    return cuda.why_unavailable()


def gpu_verdict(driver=driver_status, stack_problem=_stack_problem):
    """("skip" | "fail" | "run", reason or None): see the module docstring. driver() is
    driver_status's answer, stack_problem() the reason CuPy cannot be used (or None);
    it is asked only when the driver found a device."""
    state, detail = driver()
    if state == "absent":
        return "skip", detail
    if state == "broken":
        return "fail", detail
    problem = stack_problem()
    if problem is not None:
        return "fail", f"{detail} CUDA device(s) visible, but {problem}"
    return "run", None
