"""Compile a kernels/cuda/*.cu file once per machine: NVRTC to a cubin, cached on disk.

Why not cupy.RawModule(code=..., name_expressions=...): CuPy 13 recompiles every module
built with name_expressions in every process (its disk cache is read only when there are
none, "to retrieve C++ mangled names"), and every CuPy version appends `-ftz=true` to the
options of every module it compiles, so float32 denormals would be flushed to zero on the
GPU but not in the reference, the CPU kernels or the emulator (kernels/emulate.py).

So the launchers compile each source here, with NVRTC and the options in OPTIONS, into a
cubin (or PTX where NVRTC cannot target the device's architecture), store it with the
mangled names of its template instantiations, and load it with cupy.RawModule(path=...).
The cache lives in tinyres/ under CuPy's cache folder ($CUPY_CACHE_DIR, default
~/.cupy/kernel_cache) and is keyed by the source, the options, the architecture, the name
expressions, and the NVRTC and CuPy versions: change any of them and the key changes.
Files are written atomically (a temporary name, then os.replace), so concurrent processes
never read half a cubin.
"""
import hashlib
import json
import os
import pathlib
import tempfile
from dataclasses import dataclass

FORMAT = 1                                   # bump when the layout of the cache changes
OPTIONS = ("-std=c++17", "-ftz=false")       # denormals kept, as on the CPU (no fast math)


@dataclass(frozen=True)
class Built:
    """A compiled source: the cubin/PTX file, {name expression: mangled name}, and whether
    this call compiled it (False: it came from the cache)."""
    path: pathlib.Path
    lowered: dict
    compiled: bool


def cache_dir():
    """tinyres/ under CuPy's kernel cache folder ($CUPY_CACHE_DIR or ~/.cupy/kernel_cache)."""
    root = os.environ.get("CUPY_CACHE_DIR") or os.path.expanduser("~/.cupy/kernel_cache")
    return pathlib.Path(root) / "tinyres"


def target(compute_capability, supported):
    """(arch option, file kind) for a device of compute_capability (e.g. "90") with NVRTC's
    supported architectures (ints): a cubin for the device itself when NVRTC knows it,
    else PTX for the newest architecture NVRTC knows that the device can run (the driver
    compiles PTX for the device when the module is loaded)."""
    cc = int(compute_capability)
    if cc in supported:
        return f"-arch=sm_{cc}", "cubin"
    older = [a for a in supported if a <= cc]
    if not older:
        raise RuntimeError(f"NVRTC supports architectures {sorted(supported)}, none of which "
                           f"runs on a device of compute capability {cc}")
    return f"-arch=compute_{max(older)}", "ptx"


def cache_key(source, options, arch, name_expressions, versions):
    """The hex digest naming one compiled module; versions is (NVRTC version, CuPy version)."""
    parts = [f"format {FORMAT}", source, *options, arch, *sorted(name_expressions),
             *map(str, versions)]
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def nvrtc_compile(source, filename, options, arch, kind, name_expressions, nvrtc=None):
    """Compile with NVRTC; return (cubin or PTX bytes, {expression: mangled name}). Raises
    RuntimeError with the compiler log on an error."""
    if nvrtc is None:
        from cupy.cuda import nvrtc
    program = nvrtc.createProgram(source, filename, [], [])
    try:
        for e in name_expressions:
            nvrtc.addNameExpression(program, e)
        try:
            nvrtc.compileProgram(program, [*options, arch])
        except nvrtc.NVRTCError as err:
            raise RuntimeError(f"NVRTC failed on {filename} ({arch}):\n"
                               f"{nvrtc.getProgramLog(program)}") from err
        binary = nvrtc.getCUBIN(program) if kind == "cubin" else nvrtc.getPTX(program)
        lowered = {e: nvrtc.getLoweredName(program, e) for e in name_expressions}
    finally:
        nvrtc.destroyProgram(program)
    return (binary if isinstance(binary, bytes) else binary.encode()), lowered


def _write_atomically(path, data):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def build(source, filename, arch, kind, name_expressions, versions, directory=None,
          compile=nvrtc_compile, options=OPTIONS):
    """The cached module of `source` for `arch`: compiled (by `compile`, with the
    signature of nvrtc_compile) only when no file with its key exists yet."""
    directory = pathlib.Path(directory or cache_dir())
    directory.mkdir(parents=True, exist_ok=True)
    key = cache_key(source, options, arch, name_expressions, versions)
    stem = f"{pathlib.Path(filename).stem}-{key[:24]}"
    binary_path, names_path = directory / f"{stem}.{kind}", directory / f"{stem}.json"
    if binary_path.exists() and names_path.exists():
        lowered = json.loads(names_path.read_text(encoding="utf-8"))
        if sorted(lowered) == sorted(name_expressions):
            return Built(binary_path, lowered, compiled=False)
    binary, lowered = compile(source, filename, options, arch, kind, name_expressions)
    _write_atomically(binary_path, binary)
    _write_atomically(names_path, json.dumps(lowered, sort_keys=True).encode("utf-8"))
    return Built(binary_path, lowered, compiled=True)


def build_for_device(source, filename, name_expressions, compute_capability):
    """build() for a device of compute_capability with the installed NVRTC and CuPy."""
    import cupy
    from cupy.cuda import nvrtc

    arch, kind = target(compute_capability, set(nvrtc.getSupportedArchs()))
    versions = (".".join(map(str, nvrtc.getVersion())), cupy.__version__)
    return build(source, filename, arch, kind, name_expressions, versions)
