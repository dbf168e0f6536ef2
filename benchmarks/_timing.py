"""Shared machinery of the benchmark scripts: the machine header, worker processes that
run one engine each, rounds that alternate between the engines, first calls of a fresh
process, results-file names, and table printing.

Why one process per engine: on a small machine the idle threads of one runtime (Numba's
pool, OpenBLAS, torch's OpenMP) spin for a while after their work and steal cores from
another runtime in the same process. So the parent starts one worker per (engine, case),
a fresh Python running the benchmark script with `--worker SPEC`, one at a time (each
builds its case and warms up while the others wait), and asks the workers in turn for a
round (warm-up, then timed repetitions): tinyres round 1, torch round 1, tinyres round
2, ... Only one worker computes at a time; the others wait on their stdin.

Separate processes do not stop one runtime's idle threads from spinning on the cores the
next worker's round needs: so the parent waits `settle_s` seconds (SETTLE_S, 0.1) before
every round, for the machine to be quiet. Without it, on 2 cores, tinyres's rounds of
resnet20's 32@16 forward timed 2.80 ms right after torch's rounds and 1.66 ms with
tinyres alone, its stride-2 16->32 forward 3.50 against 2.24, while torch's timed about
the same either way (1.53 against 1.55 ms, 1.24 against 0.93); with a pause of 0.02,
0.1 or 0.3 s before each round, the two engines' rounds timed 1.66-1.78 and 1.49-1.62 ms,
1.64-1.85 and 0.87-1.16 ms (AMD family 26, tuned malloc, OpenBLAS's SkylakeX kernel;
scratch runs, not kept).

A worker in mode "warm" (the default) warms up at a tiny size, builds the full-size case,
times its first full-size call (for torch.compile, the compilation) and runs
spec['prewarm'] more untimed calls before the rounds. A worker in mode "first_calls"
only imports and builds, and its one round is the process's first spec['calls'] calls.

Peak memory: tracemalloc misses NumPy's and torch's C allocations, so a worker reports
the growth of its peak resident set size from just before it builds the full-size case
(after imports and a tiny-size warm-up of the same case, which compiles the Numba kernels
and starts the thread pools) to its end: the peak mark is reset there (Linux
/proc/self/clear_refs), and the figure is the final peak minus the resident size at that
point. The peak is read from VmHWM in /proc/self/status, which that reset clears;
getrusage's ru_maxrss is not cleared by it, and had carried the peak of the imports and
the warm-up (about 100 MB above the base for tinyres's workers, 30-50 MB for torch's)
into the figure of every small case. ru_maxrss remains the fallback off Linux. A worker
without the tiny warm-up (torch.compile's) counts its compilation in that figure.

Protocol: the worker writes one JSON object per line prefixed with "@@ " on stdout
(anything else there is ignored); the parent writes {"cmd": "round"|"done"} lines.
"""
import importlib.metadata
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
import traceback

PREFIX = "@@ "
SETTLE_S = 0.1          # seconds of quiet before each round (run_case)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----- the machine and the commit -------------------------------------------------------
def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


COMMIT_VARIABLE = "TINYRES_COMMIT"   # set by tinyres.gpu_check --commit for its steps


def git_commit():
    """`git rev-parse --short HEAD`, plus '-dirty' when the tree has changes; $TINYRES_COMMIT
    (its first 7 characters) where it is set: a copied tree's .git can be stale."""
    if os.environ.get(COMMIT_VARIABLE):
        return os.environ[COMMIT_VARIABLE][:7]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _version(module):
    """The installed version, from the package's metadata (importing torch only to
    read its version costs the parent seconds)."""
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_identity():
    """The CPU's vendor, family, model and SIMD flags, from /proc/cpuinfo where there is one."""
    fields, wanted = {}, {"vendor_id", "cpu family", "model", "model name", "flags"}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in wanted and key not in fields:
                    fields[key] = value.strip()
    except OSError:
        return {}
    simd = [flag for flag in fields.pop("flags", "").split()
            if flag.startswith(("avx", "fma", "sse4", "amx"))]
    return {**fields, "simd_flags": simd}


def blas_identity():
    """The BLAS libraries this process loads (NumPy's, SciPy's), with the kernel
    (architecture) OpenBLAS chose and its thread count, as threadpoolctl reports them, and
    the OpenBLAS variables of the environment."""
    try:
        import numpy  # noqa: F401
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    libs = [{k: lib.get(k) for k in ("filepath", "internal_api", "version", "architecture",
                                        "num_threads")}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]
    env = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
    return {"libraries": libs, "environment": env}


def machine_info():
    return {
        "cpu_identity": cpu_identity(),
        "blas": blas_identity(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "numpy": _version("numpy"),
        "numba": _version("numba"),
        "torch": _version("torch"),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_at_start": os.getloadavg()[0],
    }


def header_lines(info):
    return [f"machine: {info['platform']}, {info['cpu']}, {info['cores']} cores, "
            f"Python {info['python']}",
            f"numpy {info['numpy']}, numba {info['numba']}, torch {info['torch']}, "
            f"commit {info['commit']}, {info['date']}, "
            f"load average {info['loadavg_at_start']:.1f} at start",
            "BLAS: " + "; ".join(f"{lib['internal_api']} {lib['version']} "
                                 f"{lib['architecture']} x{lib['num_threads']}"
                                 for lib in info["blas"].get("libraries", []))
            + f" (environment: {info['blas'].get('environment') or 'no OPENBLAS_*'})",
            "CPU: " + " ".join(f"{k} {v}" for k, v in info["cpu_identity"].items()
                               if k != "simd_flags")
            + f"; SIMD: {' '.join(info['cpu_identity'].get('simd_flags', []))}"
            + f" ({simd_summary(info['cpu_identity'].get('simd_flags', []))})"]


def simd_summary(flags):
    """Whether the flags include AVX-512 and AMX, in words."""
    avx512 = sorted(f for f in flags if f.startswith("avx512"))
    amx = sorted(f for f in flags if f.startswith("amx"))
    return (f"AVX-512: {'yes, ' + ' '.join(avx512) if avx512 else 'no'}; "
            f"AMX: {'yes, ' + ' '.join(amx) if amx else 'no'}")


# ----- results files -----------------------------------------------------------------------
def results_path(info, suffix=None, folder=None):
    """benchmarks/results/cpu_f<family>m<model>_<commit>[_<suffix>].json: named by the CPU
    (family and model from /proc/cpuinfo, as in info['cpu_identity']) and the commit."""
    cpu = info.get("cpu_identity") or {}
    family, model = cpu.get("cpu family", "unknown"), cpu.get("model", "unknown")
    name = f"cpu_f{family}m{model}_{info.get('commit', 'unknown')}"
    if suffix:
        name += f"_{suffix}"
    return os.path.join(folder or os.path.join(ROOT, "benchmarks", "results"), name + ".json")


# ----- the worker side ------------------------------------------------------------------
def peak_rss_mb():
    """The peak resident set size in MB: VmHWM (reset by reset_peak_rss), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0                 # kB
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KiB on Linux


def current_rss_mb():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return peak_rss_mb()


def reset_peak_rss():
    """Linux: reset the peak-RSS mark to the current RSS (writing 5 to clear_refs), so
    that the peak seen afterwards is the case's, not the imports' or the JIT's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _send(obj):
    sys.stdout.write(PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _prepare(spec, make_step):
    """Build the full-size step; returns (step, peak base, ready message). Mode "warm": a
    tiny-size warm-up first (unless spec['tiny_warmup'] is false), then the first
    full-size call timed, then spec['prewarm'] more untimed calls. Mode "first_calls":
    imports and building only, so that the calls the parent asks for are the process's
    first."""
    engine, case = spec["engine"], spec["case"]
    warm = spec.get("mode", "warm") == "warm"
    if warm and spec.get("tiny_warmup", True):
        tiny = make_step(engine, case, True)
        for _ in range(2):
            tiny()
        del tiny
    reset_peak_rss()
    base = current_rss_mb()
    start = time.perf_counter()
    step = make_step(engine, case, False)
    ready = {"ready": True, "build_ms": 1e3 * (time.perf_counter() - start)}
    if warm:
        ready["first_call_ms"] = 1e3 * _timed(step)
        for _ in range(spec.get("prewarm", 0)):
            step()
    return step, base, ready


def serve(spec, make_step, describe=None):
    """Run in a worker: make_step(engine, case, tiny_size) returns a function doing one
    repetition (and waiting for it to finish). Answers 'round' commands until 'done',
    whose answer carries the peak memory and describe(spec) (what the process ran on).
    A round is spec['warmup'] untimed then spec['reps'] timed calls, or in mode
    "first_calls" spec['calls'] timed calls."""
    try:
        step, base, ready = _prepare(spec, make_step)
    except Exception:
        _send({"error": traceback.format_exc()})
        return
    _send(ready)
    first_calls = spec.get("mode") == "first_calls"
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "done":
            _send({"peak_rss_mb": peak_rss_mb() - base,
                   "info": describe(spec) if describe else None})
            return
        try:
            if first_calls:
                times = [_timed(step) for _ in range(spec["calls"])]
            else:
                for _ in range(spec["warmup"]):
                    step()
                times = [_timed(step) for _ in range(spec["reps"])]
            _send({"times": times})
        except Exception:
            _send({"error": traceback.format_exc()})
            return


# ----- the parent side ------------------------------------------------------------------
class Worker:
    """One engine on one case, in a fresh `python script --worker SPEC` process whose
    environment is exactly `env` (the parent's when None)."""

    def __init__(self, script, spec, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, script, "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env=dict(os.environ if env is None else env), cwd=ROOT)

    def receive(self):
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])
        return {"error": f"worker exited with code {self.proc.wait()}"}

    def ask(self, cmd):
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            return {"error": f"worker exited with code {self.proc.wait()}"}
        return self.receive()

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b:?")


def error_reason(text):
    """The exception and its message from a worker's traceback: the last line that
    names an exception (torch adds hints after it), else the last line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    named = [line for line in lines if EXCEPTION_LINE.match(line)]
    return ((named or lines or ["unknown error"])[-1])[:300]


def _failed(engine, case, msg):
    sys.stderr.write(f"[{engine}] {case['name']}: {msg['error']}\n")
    return {"error": error_reason(msg["error"])}


def _start(script, specs, envs):
    """Start the workers one at a time, each after the last is ready (building, warm-up
    and a compiling first call never share the cores with another worker)."""
    workers, out, ready = {}, {}, {}
    for engine, spec in specs.items():
        worker = Worker(script, spec, (envs or {}).get(engine))
        msg = worker.receive()
        workers[engine] = worker
        if "error" in msg:
            out[engine] = _failed(engine, spec["case"], msg)
        else:
            ready[engine] = msg
    return workers, out, ready


def _finish(worker, result):
    """Ask a worker for its peak memory and what it ran on; close it."""
    msg = worker.ask("done")
    worker.close()
    result.update({"peak_rss_mb": msg.get("peak_rss_mb"), "worker": msg.get("info")})
    return result


def run_case(script, specs, rounds, envs=None, settle_s=SETTLE_S):
    """Time one case on every engine, alternating rounds, each after settle_s seconds of
    quiet (the module docstring says why). specs: {engine: worker spec}; envs: {engine:
    environment}. Returns {engine: result}: 'ms' (median of all timed repetitions),
    'min_ms', 'round_ms' (per-round medians), 'first_call_ms', 'build_ms', 'peak_rss_mb',
    'worker' (what it ran on), or 'error'."""
    case = next(iter(specs.values()))["case"]
    workers, out, ready = _start(script, specs, envs)
    times = {e: [] for e in specs}
    round_ms = {e: [] for e in specs}
    for _ in range(rounds):
        for engine, worker in workers.items():
            if engine in out:
                continue
            time.sleep(settle_s)             # the last round's idle threads stop spinning
            msg = worker.ask("round")
            if "error" in msg:
                out[engine] = _failed(engine, case, msg)
                continue
            times[engine] += msg["times"]
            round_ms[engine].append(1e3 * statistics.median(msg["times"]))
    for engine, worker in workers.items():
        if engine in out:
            worker.close()
            continue
        out[engine] = _finish(worker, {
            "ms": 1e3 * statistics.median(times[engine]), "min_ms": 1e3 * min(times[engine]),
            "round_ms": round_ms[engine], "first_call_ms": ready[engine]["first_call_ms"],
            "build_ms": ready[engine]["build_ms"]})
    return out


def run_first_calls(script, specs, envs=None):
    """The first spec['calls'] calls of a fresh process per engine (after imports and
    building only), one engine at a time. Returns {engine: {'calls_ms', 'build_ms',
    'peak_rss_mb', 'worker'} or {'error'}}."""
    out = {}
    for engine, spec in specs.items():
        one = {engine: spec}
        workers, failed, ready = _start(script, one, envs)
        if failed:
            workers[engine].close()
            out.update(failed)
            continue
        msg = workers[engine].ask("round")
        if "error" in msg:
            workers[engine].close()
            out[engine] = _failed(engine, spec["case"], msg)
            continue
        out[engine] = _finish(workers[engine], {
            "calls_ms": [1e3 * t for t in msg["times"]], "build_ms": ready[engine]["build_ms"]})
    return out


def select(cases, pattern):
    """The cases whose name matches the regular expression `pattern` (all when None)."""
    if not pattern:
        return cases
    rx = re.compile(pattern)
    return [c for c in cases if rx.search(c["name"])]


# ----- printing ------------------------------------------------------------------------
def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_row(columns, row):
    """columns: [(title, width)]; the first column left-aligned, the others right."""
    print("  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)
                    for i, (v, (_, w)) in enumerate(zip(row, columns))), flush=True)


def print_header(columns):
    print_row(columns, [t for t, _ in columns])
    print("-" * (sum(w for _, w in columns) + 2 * (len(columns) - 1)))


def write_json(path, payload, quiet=False):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    if not quiet:
        print(f"wrote {path}")
