"""Run the CUDA C kernels of kernels/cuda/*.cu on the CPU, to test them without a GPU.

Each .cu file is compiled by g++ (-std=c++20) into a shared library, with cuda/emulate.h
standing in for the CUDA runtime: blocks run one after another, a block's threads are
real threads, __syncthreads() is a barrier that times out instead of hanging (see the
header for the whole lesson). For every kernel and element type the build adds an
extern "C" entry point that takes the launch like cuLaunchKernel does: grid, block, and an
array of pointers to the argument values. Builds are cached on disk, keyed by a hash of
the generated source, the header and the compiler flags.

`EmulatedKernel` is called like cupy.RawKernel, kernel(grid, block, args), and checks
every argument against the C signature read from the .cu file: an array must be
C-contiguous with the element type of its pointer, a scalar must be the NumPy scalar of
its C type (np.int32 for int, np.uint32 for unsigned), exactly what a real launch needs;
and it refuses a grid or block past the hardware's limits (gridDim.y and .z at most
65535, 1024 threads a block), as a GPU would. kernel(..., only=[(x, y, z), ...]) runs
only the listed blocks: how tests/test_cuda_sizes.py runs kernels at resnet50 sizes.
`backend()` returns cuda.Launchers over NumPy and these kernels: the functions of
reference.py, running the same launch code and geometry as the GPU path.
"""
import concurrent.futures
import ctypes
import functools
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

import numpy as np

from . import cuda

HEADER = cuda.CUDA_DIR / "emulate.h"
CXXFLAGS = ("-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-Wall", "-Wextra", "-Werror")
TIMEOUT_MS = 10_000    # how long a barrier waits before it calls a deadlock
_SCALARS = {"int": np.int32, "unsigned": np.uint32, "long long": np.int64,
            "float": np.float32, "double": np.float64}
GRID_LIMITS = (2**31 - 1, 65535, 65535)   # gridDim.x, .y, .z on every GPU since sm_30
BLOCK_LIMITS = (1024, 1024, 64)           # blockDim.x, .y, .z; at most 1024 threads in all


class EmulatorUnavailable(RuntimeError):
    """No C++ compiler to build the emulated kernels with."""


class KernelArgumentError(TypeError):
    """A kernel argument does not match the C type of its parameter."""


class KernelLaunchError(RuntimeError):
    """An emulated launch failed, e.g. a deadlock at __syncthreads()."""


def _cache_dir():
    root = os.environ.get("TINYRES_EMULATE_CACHE")
    path = pathlib.Path(root) if root else pathlib.Path(tempfile.gettempdir()) / "tinyres-emulate"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _c_type(param_type, ctype):
    """The parameter type with T spelled out, e.g. 'const T*' -> 'const float*'."""
    return re.sub(r"\bT\b", ctype, param_type)


def _wrapper(name, params, ctype):
    """An extern "C" entry point that launches name<ctype> from an array of argument pointers."""
    unpacked = ", ".join(f"*static_cast<{_c_type(t, ctype)}*>(args[{i}])"
                         for i, (t, _) in enumerate(params))
    return (f'extern "C" int emulate_{name}_{ctype}(const unsigned* g, const unsigned* b, '
            f"void** args, int timeout_ms, char* error, int error_len, const unsigned* only, "
            f"unsigned long long count) {{\n"
            f"    return emu::launch({{g[0], g[1], g[2]}}, {{b[0], b[1], b[2]}}, timeout_ms, "
            f"error, error_len, [args] {{ {name}<{ctype}>({unpacked}); }}, only, count);\n}}\n")


def _translation_unit(source, filename, ftz=False):
    """The header, the kernels (with #line so errors name the .cu file) and the wrappers;
    ftz=True flushes denormals as -ftz=true would (see emulate.h)."""
    wrappers = "".join(_wrapper(name, params, t)
                       for name, params in cuda.kernel_signatures(source).items()
                       for t in cuda.C_TYPES.values())
    return (f"#define EMU_FTZ {int(ftz)}\n"
            f'#include "{HEADER}"\n#line 1 "{filename}"\n{source}\n'
            f"// entry points\n{wrappers}")


def _compile(text, stem):
    """Compile a translation unit into a cached shared library; return its path."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        raise EmulatorUnavailable("no C++ compiler (g++ or $CXX) to build the emulated kernels")
    key = hashlib.sha256("\0".join([text, HEADER.read_text(), cxx, *CXXFLAGS]).encode())
    library = _cache_dir() / f"{stem}-{key.hexdigest()[:16]}.so"
    if not library.exists():
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=library.parent)
        os.close(fd)
        cpp = pathlib.Path(tmp).with_suffix(".cpp")
        cpp.write_text(text, encoding="utf-8")
        done = subprocess.run([cxx, *CXXFLAGS, str(cpp), "-o", tmp], capture_output=True, text=True)
        cpp.unlink()
        if done.returncode:
            os.unlink(tmp)
            raise RuntimeError(f"g++ failed on {stem}:\n{done.stderr}")
        os.replace(tmp, library)  # atomic: concurrent builds never see half a file
    return library


class EmulatedKernel:
    """One kernel instantiation, called like cupy.RawKernel: kernel(grid, block, args)."""

    def __init__(self, function, name, ctype, params, timeout_ms):
        self.function, self.name, self.ctype = function, f"{name}<{ctype}>", ctype
        self.params, self.timeout_ms = [(_c_type(t, ctype), p) for t, p in params], timeout_ms

    def _argument(self, i, value):
        """The ctypes object holding argument i, after checking it against its C type."""
        ctype, pname = self.params[i]
        where = f"{self.name}: argument {i} ({ctype} {pname})"
        if ctype.endswith("*"):
            base = ctype[:-1].replace("const", "").strip()
            if not isinstance(value, np.ndarray) or value.dtype != _SCALARS[base]:
                got = getattr(value, "dtype", type(value).__name__)
                raise KernelArgumentError(
                    f"{where} needs a {np.dtype(_SCALARS[base])} array, got {got}")
            if not value.flags.c_contiguous:
                raise KernelArgumentError(f"{where} needs a C-contiguous array")
            if not ctype.startswith("const") and not value.flags.writeable:
                raise KernelArgumentError(f"{where} is written to, but the array is read-only")
            return ctypes.c_void_p(value.ctypes.data)
        expected = _SCALARS[ctype]
        if type(value) is not expected:
            raise KernelArgumentError(
                f"{where} needs a np.{expected.__name__} scalar, got {type(value).__name__} "
                f"(a bare Python int would reach a GPU kernel as a 64-bit long long)")
        return np.ctypeslib.as_ctypes_type(expected)(value)

    def _check_geometry(self, grid, block):
        """Refuse what a GPU would refuse: an empty or over-limit grid or block."""
        where = f"{self.name}: launch grid {grid} block {block}"
        if min(grid + block) < 1:
            raise KernelArgumentError(f"{where} has an empty dimension")
        for axis, size, limit in zip("xyz", grid, GRID_LIMITS):
            if size > limit:
                raise KernelArgumentError(f"{where}: gridDim.{axis} = {size} exceeds the "
                                          f"limit {limit}")
        for axis, size, limit in zip("xyz", block, BLOCK_LIMITS):
            if size > limit:
                raise KernelArgumentError(f"{where}: blockDim.{axis} = {size} exceeds the "
                                          f"limit {limit}")
        if np.prod(block) > 1024:
            raise KernelArgumentError(f"{where}: more than 1024 threads per block")

    def __call__(self, grid, block, args, shared_mem=0, only=None):
        """Launch on every block of grid, or only on the blocks listed in `only` (block
        coordinates (x, y, z), each inside the grid)."""
        if shared_mem:
            raise KernelArgumentError(f"{self.name}: dynamic shared memory is not emulated")
        if len(args) != len(self.params):
            raise KernelArgumentError(
                f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        grid, block = ((tuple(int(v) for v in d) + (1, 1))[:3] for d in (grid, block))
        self._check_geometry(grid, block)
        values = [self._argument(i, a) for i, a in enumerate(args)]
        pointers = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        dims = [(ctypes.c_uint * 3)(*d) for d in (grid, block)]
        chosen, count = self._blocks(only, grid)
        error = ctypes.create_string_buffer(1024)
        if self.function(dims[0], dims[1], pointers, self.timeout_ms, error, len(error),
                         chosen, count):
            raise KernelLaunchError(f"{self.name}: {error.value.decode()}")

    def _blocks(self, only, grid):
        """(ctypes array of block coordinates or None, how many) for a launch."""
        if only is None:
            return None, 0
        coords = np.ascontiguousarray(np.asarray(only, dtype=np.int64).reshape(-1, 3))
        if len(coords) and ((coords < 0).any() or (coords >= np.array(grid)).any()):
            raise KernelArgumentError(f"{self.name}: a block of `only` lies outside grid {grid}")
        flat = coords.astype(np.uint32).ravel()
        return (ctypes.c_uint * len(flat))(*flat.tolist()), len(coords)


class EmulatedModule:
    """The kernels of one .cu source built for the CPU; like cupy.RawModule."""

    def __init__(self, source, filename="kernels.cu", timeout_ms=TIMEOUT_MS, ftz=False):
        self.signatures = cuda.kernel_signatures(source)
        stem = pathlib.Path(filename).stem
        unit = _translation_unit(source, filename, ftz)
        self.library = ctypes.CDLL(str(_compile(unit, stem)))
        self.timeout_ms = timeout_ms

    def get_function(self, name_expression):
        """The kernel "name<float>" or "name<double>"."""
        name, ctype = name_expression.rstrip(">").split("<")
        function = getattr(self.library, f"emulate_{name}_{ctype}")
        function.restype = ctypes.c_int
        function.argtypes = [ctypes.POINTER(ctypes.c_uint)] * 2 + [
            ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
            ctypes.POINTER(ctypes.c_uint), ctypes.c_ulonglong]
        return EmulatedKernel(function, name, ctype, self.signatures[name], self.timeout_ms)


def backend(sources=None, block=64, max_blocks=8, timeout_ms=TIMEOUT_MS, ftz=False,
            sample=None):
    """cuda.Launchers over NumPy with the kernels built for the CPU.

    sample, when given, is sample(name, grid, block) -> block coordinates to run (or None
    for all): each launch then runs only those blocks (tests at real ResNet sizes, where
    emulating every block would take minutes, check the outputs of the blocks they ran).

    sources maps a file name of cuda.SOURCES to replacement source text (for tests that
    plant a bug); the other files are read from kernels/cuda/. Small blocks and a small
    grid cap keep the emulation fast and make the grid-stride loops take several steps.
    ftz=False keeps denormals, as the GPU build does (kernels/cuda_build.OPTIONS); True
    flushes them, as CuPy's default -ftz=true would (a negative control for tests).
    """
    texts = {f: (sources or {}).get(f) or cuda.read_source(f) for f in cuda.SOURCES}
    with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:  # g++ runs in parallel
        built = pool.map(lambda f: EmulatedModule(texts[f], f, timeout_ms, ftz), texts)
        modules = dict(zip(texts, built))

    @functools.lru_cache(maxsize=None)
    def compiled(name, dtype):
        return modules[cuda.kernel_files()[name]].get_function(
            f"{name}<{cuda.C_TYPES[np.dtype(dtype)]}>")

    def kernel(name, dtype):
        if sample is None:
            return compiled(name, dtype)
        def launch(grid, block, args):
            grid, block = ((tuple(d) + (1, 1))[:3] for d in (grid, block))
            compiled(name, dtype)(grid, block, args, only=sample(name, grid, block))
        return launch

    return cuda.Launchers(np, kernel, block=block, max_blocks=max_blocks)
