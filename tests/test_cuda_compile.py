"""Every kernels/cuda/*.cu compiles for sm_80 and sm_90 without a single warning, no GPU needed.

Two independent compilers, each skipped cleanly where it is missing:
- NVRTC, the compiler CuPy uses at run time, through cupy.cuda.nvrtc (needs the packages
  cupy-cuda13x and nvidia-cuda-nvrtc, no GPU or driver). Each template instantiation is
  requested by name expression, as cupy.RawModule does, so the templates really are
  instantiated; any line in the compiler log fails the test.
- nvcc, with `-Werror all-warnings` for the device code and -Wall -Wextra -Werror for the
  host side, on a file that includes the .cu and takes the address of every instantiation.
A negative control shows that a warning (an unused variable) does fail each route, and the
kernel parser that names the instantiations is checked to see every __global__ function
(and, in im2col.cu, the dilation parameters in the order the launchers pass them).
The ptxas resource report (benchmarks/ptxas_report.py: registers, spills, shared memory,
occupancy at the launchers' block size, for sm_80 and sm_90) must show no spill; run
with -s to see its table. Its parser and occupancy rules are checked on a report by hand.
"""
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from tinyres.kernels import cuda

ARCHS = ["sm_80", "sm_90"]
WARNS = ("template <typename T>\n"
         "__global__ void k(T* x) { int unused = 3; x[threadIdx.x] = T(1); }\n")


def _nvrtc():
    try:
        from cupy.cuda import nvrtc
        nvrtc.getVersion()
    except Exception as e:  # no CuPy, or CuPy without an NVRTC library
        pytest.skip(f"NVRTC unavailable ({type(e).__name__}: {e}); "
                    f"pip install cupy-cuda13x nvidia-cuda-nvrtc")
    return nvrtc


def nvrtc_compile(source, filename, arch):
    """Compile source with NVRTC for arch, instantiating every kernel; return (ok, log, names)."""
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(source, filename, [], [])
    try:
        expressions = cuda.name_expressions(source)
        for e in expressions:
            nvrtc.addNameExpression(program, e)
        try:
            nvrtc.compileProgram(program, [f"--gpu-architecture={arch}", "-std=c++17"])
        except nvrtc.NVRTCError:
            return False, nvrtc.getProgramLog(program), {}
        lowered = {e: nvrtc.getLoweredName(program, e) for e in expressions}
        return True, nvrtc.getProgramLog(program), lowered
    finally:
        nvrtc.destroyProgram(program)


def nvcc_compile(source, tmp_path, stem):
    """Compile source with nvcc for every arch, warnings as errors; return (returncode, log)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found on PATH")
    refs = ", ".join(f"(void*)&{e}" for e in cuda.name_expressions(source))
    unit = tmp_path / f"{stem}_all.cu"
    unit.write_text(f"{source}\nextern void* const instantiations[];\n"
                    f"void* const instantiations[] = {{{refs}}};\n")
    gencode = [f"-gencode=arch=compute_{a[3:]},code={a}" for a in ARCHS]
    done = subprocess.run([nvcc, *gencode, "-std=c++17", "-Werror", "all-warnings",
                           "-Xcompiler", "-Wall,-Wextra,-Werror", "-c", str(unit),
                           "-o", str(tmp_path / f"{stem}.o")], capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", cuda.SOURCES)
def test_nvrtc_compiles_cleanly(filename, arch):
    source = cuda.read_source(filename)
    ok, log, lowered = nvrtc_compile(source, filename, arch)
    print(f"NVRTC {filename} {arch} log:\n{log}")
    assert ok, log
    assert log.strip() == "", f"NVRTC diagnostics for {filename}:\n{log}"
    assert len(lowered) == 2 * len(cuda.kernel_signatures(source))
    assert all(name.startswith("_Z") for name in lowered.values())


@pytest.mark.parametrize("filename", cuda.SOURCES)
def test_nvcc_compiles_cleanly(filename, tmp_path):
    code, log = nvcc_compile(cuda.read_source(filename), tmp_path, filename[:-3])
    print(f"nvcc {filename} log:\n{log}")
    assert code == 0, log
    assert "warning" not in log.lower(), log


# an integer division or remainder in PTX: div.s32, rem.u64, ... (div.rn.f32 is a float one)
_INT_DIVISION = re.compile(r"\b(div|rem)\.[su](32|64)\b")


def nvrtc_ptx(source, filename, arch=ARCHS[1]):
    """The PTX of source with every kernel instantiated (NVRTC)."""
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(source, filename, [], [])
    try:
        for e in cuda.name_expressions(source):
            nvrtc.addNameExpression(program, e)
        nvrtc.compileProgram(program, [f"--gpu-architecture={arch}", "-std=c++17"])
        ptx = nvrtc.getPTX(program)
    finally:
        nvrtc.destroyProgram(program)
    return ptx.decode() if isinstance(ptx, bytes) else ptx


# relu.cu's 1-D grid-stride loop over a long long n has no division in its source, but the
# compiler divides once per thread (div.u64) to count the loop's trips before unrolling it
@pytest.mark.parametrize("filename", [f for f in cuda.SOURCES if f != "relu.cu"])
def test_no_kernel_divides_integers(filename):
    # index arithmetic by 3-D grids and magic numbers: no div/rem instruction on integers
    ptx = nvrtc_ptx(cuda.read_source(filename), filename)
    assert ".entry" in ptx
    assert _INT_DIVISION.findall(ptx) == [], f"{filename} divides integers"


def test_a_flat_index_split_shows_up_as_integer_division():
    # the negative control: the former im2col's k % Q, k / Q, ... on runtime values
    flat = ("template <typename T>\n__global__ void k(T* y, long long Q, int L) {\n"
            "    long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x;\n"
            "    y[k] = T(k % Q) + T((int)(k / Q) / L);\n}\n")
    assert len(_INT_DIVISION.findall(nvrtc_ptx(flat, "flat.cu"))) >= 2


def test_a_warning_fails_nvrtc():
    ok, log, _ = nvrtc_compile(WARNS, "warns.cu", ARCHS[0])
    assert ok and "declared but never referenced" in log


def test_a_warning_fails_nvcc(tmp_path):
    code, log = nvcc_compile(WARNS, tmp_path, "warns")
    assert code != 0 and "declared but never referenced" in log


@pytest.mark.parametrize("filename", cuda.SOURCES)
def test_every_kernel_is_parsed(filename):
    source = cuda.read_source(filename)
    signatures = cuda.kernel_signatures(source)
    assert len(signatures) == source.count("__global__") > 0
    for params in signatures.values():
        known = r"(const )?(T|int|unsigned|long long|double)\*?"
        assert all(re.fullmatch(known, t) for t, _ in params), params


def test_im2col_kernels_take_the_dilation_and_magic_numbers_the_launchers_pass():
    # the launchers pass (N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW) as int32
    # scalars, in order, the layout's two strides as int64, then a (magic, shift) pair per
    # divisor: C, and for col2im sh and sw
    signatures = cuda.kernel_signatures(cuda.read_source("im2col.cu"))
    geometry = [("int", p) for p in "N C H W kh kw sh sw ph pw dh dw OH OW".split()]
    geometry += [("long long", "Q"), ("long long", "image_stride")]
    divisors = {"im2col": ["c"], "col2im": ["c", "sh", "sw"]}
    for name, divided in divisors.items():
        magic = [pair for d in divided for pair in (("unsigned", f"{d}_magic"),
                                                      ("int", f"{d}_shift"))]
        assert signatures[name][2:] == geometry + magic, name


def test_fastdiv_header_is_pasted_in_with_line_markers():
    source = cuda.read_source("im2col.cu")
    assert "\n#include" not in source and source.count("div_magic(int n") == 1
    assert '#line 1 "fastdiv.cuh"' in source
    # the line after the #include keeps its number in the .cu file
    raw = (cuda.CUDA_DIR / "im2col.cu").read_text().splitlines()
    line = raw.index('#include "fastdiv.cuh"') + 2
    assert f'#line {line} "im2col.cu"\n{raw[line - 1]}' in source


def test_importing_cuda_needs_no_cupy():
    code = ("import sys; sys.modules['cupy'] = None\n"
            "import tinyres.kernels.cuda as c; assert callable(c.im2col)")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------- ptxas resources (benchmarks/ptxas_report.py)
def _ptxas_report():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    import ptxas_report
    return ptxas_report


@pytest.fixture(scope="module")
def ptxas_rows():
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not found on PATH")
    report = _ptxas_report()
    rows = report.report()
    print("\n" + report.table(rows))
    return rows


def test_ptxas_reports_every_instantiation_without_spills(ptxas_rows):
    expected = {f"{e}" for f in cuda.SOURCES for e in cuda.name_expressions(cuda.read_source(f))}
    for arch in ("sm_80", "sm_90"):
        assert {r.kernel for r in ptxas_rows if r.arch == arch} == expected, arch
    spills = [r for r in ptxas_rows if r.spill_stores or r.spill_loads or r.stack]
    assert spills == [], f"register spills or stack frames: {spills}"
    assert all(0 < r.registers <= 255 and r.block == cuda.BLOCK for r in ptxas_rows)
    assert all(r.occupancy >= 0.5 for r in ptxas_rows), "occupancy below 50%"
    stage1 = [r for r in ptxas_rows if r.kernel.startswith(("batchnorm_stats<",
                                                            "batchnorm_backward_reduce<"))]
    assert len(stage1) == 8 and all(r.shared > 0 and r.barriers >= 1 for r in stage1)


PTXAS_LOG = """\
ptxas info    : Compiling entry function '_Z6im2colIfEvPKT_PS0_iiiiiiiiiiiiii' for 'sm_90'
ptxas info    : Function properties for _Z6im2colIfEvPKT_PS0_iiiiiiiiiiiiii
    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 300 bytes smem, 388 bytes cmem[0]
"""


def test_ptxas_parser_and_occupancy_by_hand():
    report = _ptxas_report()
    (r,) = report.parse(PTXAS_LOG)
    assert (r.kernel, r.arch, r.registers, r.spill_stores, r.spill_loads, r.shared,
            r.barriers) == ("im2col<float>", "sm_90", 40, 8, 4, 300, 1)
    # 40 registers x 32 lanes = 1280 per warp: 65536 // 1280 = 51 warps, 6 blocks of 8 warps
    assert report.occupancy(40, 0, 256, "sm_90") == 48 / 64
    assert report.occupancy(32, 0, 256, "sm_90") == 1.0
    # 100 KB of shared memory per block: 2 blocks fit in 228 KB, 1 in 164 KB
    assert report.occupancy(32, 100 * 1024, 256, "sm_90") == 16 / 64
    assert report.occupancy(32, 100 * 1024, 256, "sm_80") == 8 / 64
    # 1024-thread blocks are limited by threads: 2 blocks of 32 warps
    assert report.occupancy(16, 0, 1024, "sm_80") == 1.0
