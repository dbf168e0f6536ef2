"""ptxas resource report of every CUDA kernel instantiation, no GPU needed.

Each kernels/cuda/*.cu is compiled by nvcc with the options the launchers compile it with
(kernels/cuda_build.OPTIONS) for sm_80 and sm_90, every template instantiated, and
`-Xptxas -v`; from ptxas's report we read, per kernel<T> and architecture: registers per
thread, stack frame, spill stores and loads, static shared memory, barriers. With the
block size the launchers use (kernels/cuda.BLOCK) this gives the theoretical occupancy
(resident warps / the SM's maximum) by the rules of NVIDIA's occupancy calculator, from
the limits of the CUDA C Programming Guide's "Technical Specifications per Compute
Capability" table: per SM 65536 registers allocated per warp in units of 256, 2048
threads (64 warps), 32 blocks; shared memory 164 KB per SM on sm_80 and 228 KB on
sm_90, with 1 KB reserved per block.

    python benchmarks/ptxas_report.py                 # prints the table
    python benchmarks/ptxas_report.py --json out.json

tests/test_cuda_compile.py runs the same report and fails on any spill. nvcc runs are
cached in a temporary folder, keyed by the source, the flags and nvcc's version.
"""
import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from tinyres.kernels import cuda, cuda_build

ARCHS = ("sm_80", "sm_90")
REGISTERS_PER_SM, REGISTER_UNIT, MAX_WARPS, MAX_BLOCKS = 65536, 256, 64, 32
SHARED_PER_SM = {"sm_80": 164 * 1024, "sm_90": 228 * 1024}
SHARED_RESERVED, SHARED_UNIT = 1024, 128

_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(.*)")
_MANGLED = re.compile(r"_Z\d+(\w+?)I([fd])E")


@dataclasses.dataclass
class Resources:
    """One kernel instantiation on one architecture, as ptxas reports it."""
    kernel: str
    arch: str
    registers: int = 0
    stack: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    shared: int = 0
    barriers: int = 0
    block: int = cuda.BLOCK
    occupancy: float = 0.0


def kernel_name(mangled):
    """'_Z6im2colIfEvPKT_...' -> 'im2col<float>'."""
    m = _MANGLED.match(mangled)
    if m is None:
        return mangled
    return f"{m.group(1)}<{'float' if m.group(2) == 'f' else 'double'}>"


def parse(log):
    """[Resources] from the text of `nvcc -Xptxas -v`."""
    found, current = [], None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            current = Resources(kernel_name(m.group(1)), m.group(2))
            found.append(current)
        elif current and (m := _FRAME.search(line)):
            current.stack, current.spill_stores, current.spill_loads = map(int, m.groups())
        elif current and (m := _USED.search(line)):
            current.registers = int(m.group(1))
            rest = m.group(2)
            smem = re.search(r"(\d+) bytes smem", rest)
            bars = re.search(r"used (\d+) barriers", rest)
            current.shared = int(smem.group(1)) if smem else 0
            current.barriers = int(bars.group(1)) if bars else 0
    return found


def occupancy(registers, shared, block, arch):
    """Theoretical occupancy: resident warps / 64, the least of the limits from threads,
    blocks, registers and shared memory (occupancy calculator rules)."""
    warps = -(-block // 32)
    per_warp = -(-max(registers, 1) * 32 // REGISTER_UNIT) * REGISTER_UNIT
    by_registers = (REGISTERS_PER_SM // per_warp) // warps
    shared_block = -(-shared // SHARED_UNIT) * SHARED_UNIT + SHARED_RESERVED
    by_shared = SHARED_PER_SM[arch] // shared_block
    blocks = min(MAX_BLOCKS, MAX_WARPS // warps, by_registers, by_shared)
    return blocks * warps / MAX_WARPS


def _translation_unit(source):
    refs = ", ".join(f"(void*)&{e}" for e in cuda.name_expressions(source))
    return (f"{source}\nextern void* const instantiations[];\n"
            f"void* const instantiations[] = {{{refs}}};\n")


def nvcc_log(filename, archs=ARCHS, nvcc=None):
    """nvcc's -Xptxas -v output for one kernels/cuda file (cached on disk)."""
    nvcc = nvcc or shutil.which("nvcc")
    if nvcc is None:
        raise FileNotFoundError("nvcc not found on PATH")
    flags = [*cuda_build.OPTIONS, "-Xptxas", "-v",
             *[f"-gencode=arch=compute_{a[3:]},code={a}" for a in archs]]
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    unit = _translation_unit(cuda.read_source(filename))
    key = hashlib.sha256("\0".join([unit, *flags, version]).encode()).hexdigest()[:20]
    folder = os.path.join(tempfile.gettempdir(), "tinyres-ptxas")
    os.makedirs(folder, exist_ok=True)
    cached = os.path.join(folder, f"{filename[:-3]}-{key}.log")
    if os.path.exists(cached):
        with open(cached, encoding="utf-8") as f:
            return f.read()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, filename)
        with open(src, "w", encoding="utf-8") as f:
            f.write(unit)
        done = subprocess.run([nvcc, *flags, "-c", src, "-o", os.path.join(tmp, "k.o")],
                              capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"nvcc failed on {filename}:\n{done.stderr}")
    log = done.stdout + done.stderr
    fd, tmp_log = tempfile.mkstemp(dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(log)
    os.replace(tmp_log, cached)
    return log


def report(archs=ARCHS, block=cuda.BLOCK):
    """[Resources] of every kernel instantiation in cuda.SOURCES, occupancy filled in."""
    with concurrent.futures.ThreadPoolExecutor(len(cuda.SOURCES)) as pool:
        logs = list(pool.map(lambda f: nvcc_log(f, archs), cuda.SOURCES))
    rows = [r for log in logs for r in parse(log)]
    for r in rows:
        r.block = block
        r.occupancy = occupancy(r.registers, r.shared, block, r.arch)
    return sorted(rows, key=lambda r: (r.kernel, r.arch))


def table(rows):
    """The report as a text table."""
    head = (f"{'kernel':34} {'arch':6} {'regs':>4} {'stack':>5} {'spill st/ld':>11} "
            f"{'smem':>6} {'bar':>3} {'block':>5} {'occup.':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.kernel:34} {r.arch:6} {r.registers:4d} {r.stack:5d} "
                     f"{f'{r.spill_stores}/{r.spill_loads}':>11} {r.shared:6d} "
                     f"{r.barriers:3d} {r.block:5d} {r.occupancy:6.0%}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the report to this file")
    args = parser.parse_args(argv)
    try:
        rows = report()
    except FileNotFoundError as err:
        print(f"ptxas_report: {err}; install the CUDA toolkit (nvcc)", file=sys.stderr)
        return 2
    print(table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
