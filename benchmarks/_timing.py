"""Shared machinery of the benchmark scripts: the machine header, worker processes that
run one engine each, rounds that alternate between the engines, and table printing.

Why one process per engine: on a small machine the idle threads of one runtime (Numba's
pool, OpenBLAS, torch's OpenMP) spin for a while after their work and steal cores from
another runtime in the same process. So the parent starts one worker per (engine, case),
a fresh Python running the benchmark script with `--worker SPEC`, and asks the workers in
turn for a round (warm-up, then timed repetitions): tinyres round 1, torch round 1,
tinyres round 2, ... Only one worker computes at a time; the other waits on its stdin.

Peak memory: tracemalloc misses NumPy's and torch's C allocations, so a worker reports
the growth of its peak resident set size from just before it builds the full-size case
(after imports and a tiny-size warm-up of the same case, which compiles the Numba kernels
and starts the thread pools) to its end: the peak mark is reset there (Linux
/proc/self/clear_refs), and the figure is the final peak minus the resident size at that
point. The peak is read from VmHWM in /proc/self/status, which that reset clears;
getrusage's ru_maxrss is not cleared by it, and had carried the peak of the imports and
the warm-up (about 100 MB above the base for tinyres's workers, 30-50 MB for torch's)
into the figure of every small case. ru_maxrss remains the fallback off Linux.

Protocol: the worker writes one JSON object per line prefixed with "@@ " on stdout
(anything else there is ignored); the parent writes {"cmd": "round"|"done"} lines.
"""
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


def git_commit():
    """`git rev-parse --short HEAD`, plus '-dirty' when the tree has changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _version(module):
    try:
        return __import__(module).__version__
    except Exception:
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
            + f"; SIMD: {' '.join(info['cpu_identity'].get('simd_flags', []))}"]


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


def serve(spec, make_step):
    """Run in a worker: make_step(engine, case, tiny_size) returns a function doing one
    repetition (and waiting for it to finish). Answers 'round' commands until 'done'."""
    try:
        tiny = make_step(spec["engine"], spec["case"], True)
        for _ in range(2):
            tiny()
        del tiny
        reset_peak_rss()
        base = current_rss_mb()
        step = make_step(spec["engine"], spec["case"], False)
    except Exception:
        _send({"error": traceback.format_exc()})
        return
    _send({"ready": True})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "done":
            _send({"peak_rss_mb": peak_rss_mb() - base})
            return
        try:
            for _ in range(spec["warmup"]):
                step()
            times = []
            for _ in range(spec["reps"]):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            _send({"times": times})
        except Exception:
            _send({"error": traceback.format_exc()})
            return


# ----- the parent side ------------------------------------------------------------------
class Worker:
    """One engine on one case, in a fresh `python script --worker SPEC` process."""

    def __init__(self, script, spec, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, script, "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env={**os.environ, **(env or {})}, cwd=ROOT)

    def receive(self):
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])
        return {"error": f"worker exited with code {self.proc.wait()}"}

    def ask(self, cmd):
        self.proc.stdin.write(json.dumps({"cmd": cmd}) + "\n")
        self.proc.stdin.flush()
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


def run_case(script, case, engines, rounds, reps, warmup, env=None):
    """Time `case` on every engine, alternating rounds. Returns {engine: result dict}
    with 'ms' (median of all timed repetitions), 'round_ms' (per-round medians),
    'min_ms', 'peak_rss_mb', or 'error'."""
    workers, out = {}, {}
    for engine in engines:
        spec = {"engine": engine, "case": case, "reps": reps, "warmup": warmup}
        workers[engine] = Worker(script, spec, env)
    for engine, worker in workers.items():
        msg = worker.receive()
        if "error" in msg:
            out[engine] = {"error": msg["error"].strip().splitlines()[-1]}
            sys.stderr.write(f"[{engine}] {case['name']}: {msg['error']}\n")
    times = {e: [] for e in engines}
    round_ms = {e: [] for e in engines}
    for _ in range(rounds):
        for engine, worker in workers.items():
            if engine in out:
                continue
            msg = worker.ask("round")
            if "error" in msg:
                out[engine] = {"error": msg["error"].strip().splitlines()[-1]}
                sys.stderr.write(f"[{engine}] {case['name']}: {msg['error']}\n")
                continue
            times[engine] += msg["times"]
            round_ms[engine].append(1e3 * statistics.median(msg["times"]))
    for engine, worker in workers.items():
        if engine not in out:
            rss = worker.ask("done").get("peak_rss_mb")
            out[engine] = {"ms": 1e3 * statistics.median(times[engine]),
                           "min_ms": 1e3 * min(times[engine]),
                           "round_ms": round_ms[engine], "peak_rss_mb": rss}
        worker.close()
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


def write_json(path, payload):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    print(f"wrote {path}")
