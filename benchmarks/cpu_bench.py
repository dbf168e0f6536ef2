"""tinyres beside PyTorch on the CPU: per layer (convolution, batch norm, ReLU) and whole
models (training step, inference), same shapes, same process settings.

Each engine runs in its own worker process, one per (engine, case), and the engines
alternate over rounds (see benchmarks/_timing.py for why and for the memory figure).
A round is `--warmup` untimed repetitions then `--reps` timed ones, after `--settle`
seconds of quiet (the last worker's idle threads stop spinning); the table shows the
median over every timed repetition of every round. The engines (cpu_engines.py):
tinyres, torch (eager), torch_compile (torch.compile with inductor, model cases only)
and numpy (a NumPy im2col convolution, convolution cases only).

Like with like (benchmarks/_process.py): every worker, whatever its engine, gets the
same environment and thread count. `--alloc` runs the whole table with glibc's default
allocator, with MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647 (what
tinyres.runtime.tune() sets), or both, one table each; `--blas-env detect` (the default)
removes OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from the workers' environment so that
OpenBLAS detects the CPU itself, `--blas-env inherit` keeps them. tinyres's workers call
tinyres.runtime.tune() only with `--tune` (not like with like, and said so). tinyres's
CPU kernels keep their large arrays for reuse (kernels/buffers.py), as part of the engine;
`--no-buffer-cache` switches that off in its workers, to measure what it buys.

Inference is measured twice: warm (a worker that ran a tiny-size warm-up, then
`--infer-warmup` full-size calls, then the rounds) and "first calls" (a fresh process per
engine, after its imports and building only, the time of each of its first
`--first-calls` calls; for torch_compile the first one is the compilation).

Columns of the warm table:
  case           the layer or model; N x C x H x W is the input, "fwd" a forward pass
                 with autograd recording (as in training), "fwd+bwd" forward and backward
  <engine> ms    median wall time of one repetition
  ratio          tinyres ms / torch ms (above 1: tinyres is slower)
  /compile       tinyres ms / torch_compile ms
  compile s      torch_compile's first full-size call: compilation and one run
  <engine> GF/s  convolution (and fc) FLOPs per second; a forward conv counts
                 2*N*OC*OH*OW*C*kh*kw, its backward twice that; "-" for batch norm / ReLU
  <engine> MB    growth of the worker's peak RSS over the case (see _timing.py)
  MB ratio       tinyres MB / torch MB

    python benchmarks/cpu_bench.py --goals --save      # the goal cases, both allocators
    python benchmarks/cpu_bench.py --quick             # a small subset (a few minutes)
    python benchmarks/cpu_bench.py --small             # resnet20 at batch 8 and 32
    python benchmarks/cpu_bench.py --tiny              # toy sizes: checks the harness
    python benchmarks/cpu_bench.py --cases 'r20 conv' --engines tinyres,numpy,torch
    python benchmarks/cpu_bench.py --json benchmarks/results/cpu.json --rounds 5 --reps 5

`--json auto` (or `--save`) writes
benchmarks/results/cpu_f<cpu family>m<model>_<commit>[_<suffix>].json.
"""
import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _process  # noqa: E402
import _timing  # noqa: E402
# The engines live in cpu_engines.py; their entry points stay importable from here too.
from cpu_engines import MODEL_SIZES, conv_out, make_step, runs_case, tiny  # noqa: E402,F401
from cpu_engines import torch_model  # noqa: E402,F401

ENGINES = ("tinyres", "torch", "torch_compile", "numpy")
LABELS = {"tinyres": "tinyres", "torch": "torch", "torch_compile": "compile", "numpy": "numpy"}
SCRIPT = os.path.abspath(__file__)
DEFAULTS = {   # per case set: engines, rounds, reps, warmup, infer_warmup, first_calls
    "all": ("tinyres,torch,torch_compile", 3, 3, 1, 5, 3),
    "goals": ("tinyres,torch,torch_compile", 3, 3, 1, 5, 3),
    "quick": ("tinyres,torch", 2, 2, 1, 5, 3),
    "small": ("tinyres,torch", 3, 5, 2, 10, 3),
    "tiny": ("tinyres,torch", 1, 1, 0, 1, 2),
}


# ----- the convolutions of each model ---------------------------------------------------
def _conv(n, c, h, oc, k, s, p):
    return {"n": n, "c": c, "h": h, "w": h, "oc": oc, "k": k, "stride": s, "pad": p}


def model_convs(model, n, size=None):
    """Every convolution of `model` at batch n on size x size images (default: 32 for
    resnet20, 224 for the others), in order (repeats included), and its fc as
    (in_features, out_features)."""
    size = size or MODEL_SIZES[model]
    convs = []
    if model == "resnet20":
        convs.append(_conv(n, 3, size, 16, 3, 1, 1))
        inplanes, h = 16, size
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                s = stride if i == 0 else 1
                convs.append(_conv(n, inplanes, h, planes, 3, s, 1))
                h = conv_out(h, 3, s, 1)
                convs.append(_conv(n, planes, h, planes, 3, 1, 1))
                inplanes = planes
        return convs, (64, 10)
    if model in ("resnet18", "resnet50"):
        convs.append(_conv(n, 3, size, 64, 7, 2, 3))
        inplanes, h = 64, conv_out(conv_out(size, 7, 2, 3), 3, 2, 1)     # stem, max pool
        bottleneck = model == "resnet50"
        blocks = (3, 4, 6, 3) if bottleneck else (2, 2, 2, 2)
        expansion = 4 if bottleneck else 1
        for planes, count, stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2)):
            for i in range(count):
                s = stride if i == 0 else 1
                ho = conv_out(h, 3, s, 1)
                if bottleneck:
                    convs.append(_conv(n, inplanes, h, planes, 1, 1, 0))
                    convs.append(_conv(n, planes, h, planes, 3, s, 1))
                    convs.append(_conv(n, planes, ho, planes * 4, 1, 1, 0))
                else:
                    convs.append(_conv(n, inplanes, h, planes, 3, s, 1))
                    convs.append(_conv(n, planes, ho, planes, 3, 1, 1))
                if s != 1 or inplanes != planes * expansion:
                    convs.append(_conv(n, inplanes, h, planes * expansion, 1, s, 0))
                inplanes, h = planes * expansion, ho
        return convs, (inplanes, 1000)
    raise ValueError(model)


def conv_flops(cv):
    oh = conv_out(cv["h"], cv["k"], cv["stride"], cv["pad"])
    ow = conv_out(cv["w"], cv["k"], cv["stride"], cv["pad"])
    return 2 * cv["n"] * cv["oc"] * oh * ow * cv["c"] * cv["k"] * cv["k"]


def model_forward_flops(model, n, size=None):
    convs, (fin, fout) = model_convs(model, n, size)
    return sum(conv_flops(cv) for cv in convs) + 2 * n * fin * fout


def conv_name(prefix, cv):
    return (f"{prefix} conv{cv['k']}x{cv['k']}/s{cv['stride']} {cv['c']}->{cv['oc']} "
            f"{cv['n']}x{cv['c']}x{cv['h']}x{cv['w']}")


def distinct(convs):
    seen, out = set(), []
    for cv in convs:
        key = tuple(sorted(cv.items()))
        if key not in seen:
            seen.add(key)
            out.append(cv)
    return out


def conv_cases(prefix, convs, ops=("fwd", "fwd+bwd")):
    return [{"name": f"{conv_name(prefix, cv)} {op}", "kind": "conv", "op": op,
             "flops": conv_flops(cv) * (1 if op == "fwd" else 3), **cv}
            for cv in convs for op in ops]


def pointwise_cases(prefix, convs):
    """Batch norm and ReLU forward+backward on each distinct conv output shape."""
    shapes = []
    for cv in convs:
        oh = conv_out(cv["h"], cv["k"], cv["stride"], cv["pad"])
        if (cv["n"], cv["oc"], oh) not in shapes:
            shapes.append((cv["n"], cv["oc"], oh))
    return [{"name": f"{prefix} {kind} {n}x{c}x{h}x{h} fwd+bwd", "kind": kind,
             "op": "fwd+bwd", "n": n, "c": c, "h": h, "w": h, "flops": None}
            for kind in ("batchnorm", "relu") for n, c, h in shapes]


def model_case(model, mode, n, size=None, fold=False):
    """A training step ("train") or an inference ("infer") of a whole model; fold=True
    (inference) folds every batch norm into the conv before it on both sides: tinyres's
    fold_batchnorm, torch.fx's fuse (torch.fx.experimental.optimization)."""
    flops = model_forward_flops(model, n, size) * (3 if mode == "train" else 1)
    name = (f"{model} {mode}{' folded' if fold else ''} step batch {n}"
            + (f" {size}x{size}" if size else ""))
    case = {"name": name, "kind": mode, "model": model, "n": n, "flops": flops}
    case = dict(case, fold=True) if fold else case
    return dict(case, size=size) if size else case


def model_cases():
    """Training step and inference of resnet20 at batch 128 (inference also with batch norm
    folded into the convs) and resnet18 at batch 16."""
    return [model_case("resnet20", "train", 128), model_case("resnet20", "infer", 128),
            model_case("resnet20", "infer", 128, fold=True),
            model_case("resnet18", "train", 16), model_case("resnet18", "infer", 16)]


def layer_convs():
    r20 = [_conv(128, 16, 32, 16, 3, 1, 1), _conv(128, 32, 16, 32, 3, 1, 1),
           _conv(128, 64, 8, 64, 3, 1, 1), _conv(128, 16, 32, 32, 3, 2, 1),
           _conv(128, 32, 16, 64, 3, 2, 1)]
    r18 = [_conv(16, 3, 224, 64, 7, 2, 3)]
    r18 += [_conv(16, c, h, c, 3, 1, 1) for c, h in ((64, 56), (128, 28), (256, 14), (512, 7))]
    r18 += [_conv(16, c, h, 2 * c, 1, 2, 0) for c, h in ((64, 56), (128, 28), (256, 14))]
    return r20, r18


def all_cases():
    """The models, then every layer case."""
    r20, r18 = layer_convs()
    return (model_cases() + conv_cases("r20", r20) + pointwise_cases("r20", r20)
            + conv_cases("r18", r18) + pointwise_cases("r18", r18))


def quick_cases():
    """The resnet20 model cases and its 16->16 layer: a few minutes."""
    r20, _ = layer_convs()
    return (model_cases()[:3] + conv_cases("r20", r20[:1]) + pointwise_cases("r20", r20[:1]))


def small_batch_cases():
    """resnet20's training step and inference at batch 8 and 32: where the fixed costs of
    a step (Python, kernel launches, allocation) weigh most."""
    return [model_case("resnet20", mode, n) for n in (8, 32) for mode in ("train", "infer")]


def goals_cases():
    """The cases the CPU goals are stated on: the four model cases and every listed
    convolution's forward+backward (resnet20's 3x3 layers; resnet18's 3x3 layers at
    56/28/14/7, its 7x7 stem and its 1x1 stride-2 projections)."""
    r20, r18 = layer_convs()
    return (model_cases() + conv_cases("r20", r20, ("fwd+bwd",))
            + conv_cases("r18", r18, ("fwd+bwd",)))


def tiny_cases():
    """Toy sizes, for checking the harness itself: a resnet20 inference on 2 images of
    8x8 and one small convolution's forward+backward."""
    return [model_case("resnet20", "infer", 2, size=8),
            conv_cases("tiny", [_conv(2, 4, 8, 4, 3, 1, 1)], ("fwd+bwd",))[0]]


CASE_SETS = {"all": all_cases, "quick": quick_cases, "goals": goals_cases,
             "small": small_batch_cases, "tiny": tiny_cases}


# ----- rows: one printed line and one JSON record per case ---------------------------------
def _ratio(a, b):
    return a / b if a is not None and b else None


def _cell(result, key, spec):
    if "error" in result:
        return "error"
    return _timing.fmt(result.get(key), spec)


def warm_columns(cases, engines):
    """(title, width) of each column of the warm table."""
    columns = [("case", max([len(c["name"]) for c in cases] + [40]))]
    columns += [(f"{LABELS[e]} ms", 10) for e in engines] + [("ratio", 6)]
    if "torch_compile" in engines:
        columns += [("/compile", 8), ("compile s", 9)]
    columns += [(f"{LABELS[e]} GF/s", 12) for e in engines]
    return columns + [(f"{LABELS[e]} MB", 10) for e in engines] + [("MB ratio", 8)]


def warm_row(case, res, engines, alloc):
    """The printed row and the JSON record of a warm case. res: {engine: result} as
    _timing.run_case returns it ({} for an engine that does not run the case)."""
    res = {e: dict(res.get(e, {})) for e in engines}
    flops = case.get("flops")
    for result in res.values():
        if flops and "ms" in result:
            result["gflops"] = flops / result["ms"] / 1e6
    t, r, c = (res.get(e, {}) for e in ("tinyres", "torch", "torch_compile"))
    ratio, ratio_compile = _ratio(t.get("ms"), r.get("ms")), _ratio(t.get("ms"), c.get("ms"))
    memory = _ratio(t.get("peak_rss_mb"), r.get("peak_rss_mb"))
    compile_s = c["first_call_ms"] / 1e3 if "first_call_ms" in c else None
    row = [case["name"]] + [_cell(res[e], "ms", ".2f") for e in engines]
    row.append(_timing.fmt(ratio, ".2f"))
    if "torch_compile" in engines:
        row += [_timing.fmt(ratio_compile, ".2f"), _timing.fmt(compile_s, ".1f")]
    row += [_cell(res[e], "gflops", ".1f") for e in engines]
    row += [_cell(res[e], "peak_rss_mb", ".0f") for e in engines]
    row.append(_timing.fmt(memory, ".2f"))
    return row, {"alloc": alloc, "measure": "warm", "case": case,
                 "ratio_tinyres_torch": ratio, "ratio_tinyres_compile": ratio_compile,
                 "compile_s": compile_s, "memory_ratio_tinyres_torch": memory,
                 "results": res}


def first_calls_columns(cases, engines):
    """(title, width) of each column of the first-calls table."""
    columns = [("case (first calls of a fresh process)",
                max([len(c["name"]) for c in cases] + [40]))]
    columns += [(f"{LABELS[e]} 1st ms", 14) for e in engines]
    columns += [(f"{LABELS[e]} later ms", 14) for e in engines]
    return columns + [("ratio 1st", 9), ("ratio later", 11)]


def first_calls_row(case, res, engines, alloc):
    """The printed row and the JSON record of a case's first calls: the first call, and
    the median of the calls after it ('later')."""
    res = {e: dict(res.get(e, {})) for e in engines}
    for result in res.values():
        calls = result.get("calls_ms")
        if calls:
            result["first_ms"] = calls[0]
            result["later_ms"] = statistics.median(calls[1:]) if len(calls) > 1 else None
    t, r = res.get("tinyres", {}), res.get("torch", {})
    first = _ratio(t.get("first_ms"), r.get("first_ms"))
    later = _ratio(t.get("later_ms"), r.get("later_ms"))
    row = [case["name"]] + [_cell(res[e], "first_ms", ".2f") for e in engines]
    row += [_cell(res[e], "later_ms", ".2f") for e in engines]
    row += [_timing.fmt(first, ".2f"), _timing.fmt(later, ".2f")]
    return row, {"alloc": alloc, "measure": "first_calls", "case": case,
                 "ratio_first_call_tinyres_torch": first,
                 "ratio_later_calls_tinyres_torch": later, "results": res}


def error_lines(res):
    """'    <engine>: error: <reason>' for each engine that failed on the case."""
    return [f"    {LABELS[e]}: error: {r['error']}" for e, r in res.items() if "error" in r]


# ----- tables --------------------------------------------------------------------------------
@contextlib.contextmanager
def engine_envs(engines, env):
    """The environment of each engine's worker: `env`, and for torch_compile a fresh,
    empty inductor cache (every compilation measured is a cold one), removed afterwards."""
    envs, folders = {}, []
    for engine in engines:
        envs[engine] = dict(env)
        if engine == "torch_compile":
            folders.append(tempfile.mkdtemp(prefix="cpu_bench_inductor_"))
            envs[engine]["TORCHINDUCTOR_CACHE_DIR"] = folders[-1]
    try:
        yield envs
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def worker_spec(engine, case, opts, mode):
    """What one worker is asked to do (see _timing.serve)."""
    return {"engine": engine, "case": case, "mode": mode, "reps": opts.reps,
            "warmup": opts.warmup, "calls": opts.first_calls,
            "tiny_warmup": engine != "torch_compile",
            "prewarm": opts.infer_warmup if case["kind"] == "infer" else 0}


def _measure(cases, engines, opts, env, mode):
    """Yield (case, {engine: result}) for each case, every applicable engine measured."""
    for case in cases:
        case = dict(case, threads=opts.threads, tune=opts.tune,
                    buffer_cache=not opts.no_buffer_cache)
        used = [e for e in engines if runs_case(e, case)]
        with engine_envs(used, env) as envs:
            specs = {e: worker_spec(e, case, opts, mode) for e in used}
            if mode == "warm":
                yield case, _timing.run_case(SCRIPT, specs, opts.rounds, envs,
                                             opts.settle)
            else:
                yield case, _timing.run_first_calls(SCRIPT, specs, envs)


def run_table(cases, engines, opts, env, alloc, mode, seen):
    """Measure and print one table; returns its JSON records. `seen` ({engine: worker
    info}) gains each engine's first report: the one-line summaries printed at the top
    of the table (and, for an engine first met further down, above its first row)."""
    columns = (warm_columns if mode == "warm" else first_calls_columns)(cases, engines)
    make_row = warm_row if mode == "warm" else first_calls_row
    records = []
    for i, (case, res) in enumerate(_measure(cases, engines, opts, env, mode)):
        for engine, result in res.items():
            if engine not in seen and result.get("worker"):
                seen[engine] = result["worker"]
                print("  " + _process.summary_line(LABELS[engine], result["worker"]))
        if i == 0:
            _timing.print_header(columns)
        row, record = make_row(case, res, engines, alloc)
        _timing.print_row(columns, row)
        for line in error_lines(record["results"]):
            print(line)
        records.append(record)
    return records


def run_setting(cases, engines, opts, alloc):
    """The warm table, then the first-calls table of the inference cases, under one
    allocator setting. Returns (warm records, first-calls records, engine summaries)."""
    env = _process.worker_env(os.environ, alloc, opts.blas_env)
    seen = {}
    print(f"\nCPU, float32, allocator {alloc}  (ratio = tinyres/torch; medians over "
          f"{opts.rounds} rounds x {opts.reps} reps after {opts.warmup} warm-up, each round "
          f"after {opts.settle} s of quiet, inference after {opts.infer_warmup} more; "
          f"{opts.threads} threads each)")
    warm = run_table(cases, engines, opts, env, alloc, "warm", seen)
    infer = [c for c in cases if c["kind"] == "infer"]
    first = []
    if opts.first_calls and infer:
        print(f"\nFirst calls, allocator {alloc}: a fresh process per engine, after imports "
              f"and building only; 'later' = median of calls 2-{opts.first_calls}")
        first = run_table(infer, engines, opts, env, alloc, "first_calls", seen)
    return warm, first, seen


# ----- the command line --------------------------------------------------------------------
def auto_suffix(case_set, pattern, allocs, blas_env, tune, extra=None, buffer_cache=True):
    """The suffix of an automatic results-file name: the case set (unless all), 'sel'
    when --cases narrowed it, a single allocator setting, 'blasinherit', 'tune',
    'nocache' (--no-buffer-cache) and the user's --suffix."""
    parts = [case_set] if case_set != "all" else []
    parts += ["sel"] if pattern else []
    parts += list(allocs) if len(allocs) == 1 else []
    parts += ["blasinherit"] if blas_env == "inherit" else []
    parts += ["tune"] if tune else []
    parts += [] if buffer_cache else ["nocache"]
    parts += [extra] if extra else []
    return "_".join(parts) or None


def parse_args(argv):
    """The parser and the parsed command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sets = ap.add_mutually_exclusive_group()
    sets.add_argument("--quick", action="store_true", help="a small subset, few repetitions")
    sets.add_argument("--goals", action="store_true",
                      help="the goal cases: four model cases, the listed convs' fwd+bwd")
    sets.add_argument("--small", action="store_true",
                      help="resnet20's training step and inference at batch 8 and 32")
    sets.add_argument("--tiny", action="store_true",
                      help="toy sizes, 1 round of 1 rep: checks the harness, measures nothing")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON; 'auto': "
                    "benchmarks/results/cpu_f<family>m<model>_<commit>[_<suffix>].json")
    ap.add_argument("--save", action="store_true", help="the same as --json auto")
    ap.add_argument("--suffix", help="appended to the automatic results-file name")
    ap.add_argument("--cases", metavar="PATTERN", help="regular expression on case names")
    ap.add_argument("--engines", help="comma-separated, from " + ", ".join(ENGINES)
                    + " (default tinyres,torch,torch_compile; tinyres,torch with "
                    "--quick or --tiny)")
    ap.add_argument("--rounds", type=int, help="alternating rounds per engine (default 3)")
    ap.add_argument("--reps", type=int, help="timed repetitions per round (default 3)")
    ap.add_argument("--warmup", type=int, help="untimed repetitions per round (default 1)")
    ap.add_argument("--settle", type=float, default=_timing.SETTLE_S,
                    help="seconds of quiet before each round, for the last worker's idle "
                         f"threads to stop spinning (default {_timing.SETTLE_S})")
    ap.add_argument("--infer-warmup", type=int,
                    help="untimed full-size inference calls before the first round (default 5)")
    ap.add_argument("--first-calls", type=int,
                    help="calls timed in a fresh process per inference case (default 3; 0: "
                         "no first-calls table)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for every engine (default: all cores)")
    ap.add_argument("--alloc", choices=("default", "tuned", "both"), default="both",
                    help="the workers' allocator settings: glibc's default, the tuned "
                         "MALLOC_* variables, or both, one table each (default both)")
    ap.add_argument("--blas-env", choices=_process.BLAS_ENV_SETTINGS, default="detect",
                    help="detect: remove OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from the "
                         "workers' environment (default); inherit: keep them")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    ap.add_argument("--tune", action="store_true",
                    help="tinyres's workers also call tinyres.runtime.tune() (tinyres only)")
    ap.add_argument("--no-buffer-cache", action="store_true",
                    help="tinyres's workers take their large arrays from np.empty "
                         "(tinyres.kernels.buffers.enable(False))")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    return ap, ap.parse_args(argv)


def resolve(ap, args):
    """Fill the options the case set decides; returns (case set name, engines, allocs)."""
    case_set = "goals" if args.goals else "quick" if args.quick else \
        "small" if args.small else "tiny" if args.tiny else "all"
    engines, rounds, reps, warmup, infer_warmup, first_calls = DEFAULTS[case_set]
    engines = [e.strip() for e in (args.engines or engines).split(",") if e.strip()]
    for e in engines:
        if e not in ENGINES:
            ap.error(f"unknown engine {e!r}")
    for name, value in (("rounds", rounds), ("reps", reps), ("warmup", warmup),
                        ("infer_warmup", infer_warmup), ("first_calls", first_calls)):
        if getattr(args, name) is None:
            setattr(args, name, value)
    allocs = _process.ALLOC_SETTINGS if args.alloc == "both" else (args.alloc,)
    return case_set, engines, allocs


def settings_record(args, case_set, engines, allocs, argv):
    """The JSON's "settings": how the run was made."""
    return {"case_set": case_set, "cases_pattern": args.cases, "engines": engines,
            "rounds": args.rounds, "reps": args.reps, "warmup": args.warmup,
            "settle_s": args.settle, "infer_warmup": args.infer_warmup, "first_calls": args.first_calls,
            "threads": args.threads, "alloc": list(allocs),
            "malloc_tuned": dict(_process.MALLOC_TUNED), "blas_env": args.blas_env,
            "blas_env_removed": _process.removed_blas_variables(os.environ, args.blas_env),
            "tinyres_tune": args.tune, "tinyres_buffer_cache": not args.no_buffer_cache,
            "argv": argv}


def describe(spec):
    """What a worker ran on (its answer to "done")."""
    return _process.worker_info(spec["engine"], spec["case"].get("threads"))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap, args = parse_args(argv)
    if args.worker:
        _timing.serve(json.loads(args.worker), make_step, describe)
        return
    case_set, engines, allocs = resolve(ap, args)
    cases = _timing.select(CASE_SETS[case_set](), args.cases)
    if args.list:
        print("\n".join(c["name"] for c in cases))
        return
    info = _timing.machine_info()
    settings = settings_record(args, case_set, engines, allocs, argv)
    print("\n".join(_timing.header_lines(info)))
    print("\n".join(_process.settings_lines(allocs, args.blas_env, settings["blas_env_removed"],
                                            args.threads, args.tune,
                                            not args.no_buffer_cache)))
    print("memory: growth of each worker's peak RSS (VmHWM) over the case, one fresh "
          "process per (engine, case)")
    payload = {"format": 2, "machine": info, "settings": settings, "engines_info": {},
               "rows": [], "first_calls": []}
    for alloc in allocs:
        warm, first, seen = run_setting(cases, engines, args, alloc)
        payload["rows"] += warm
        payload["first_calls"] += first
        payload["engines_info"][alloc] = seen
    path = args.json
    if args.save or path == "auto":
        path = _timing.results_path(info, auto_suffix(case_set, args.cases, allocs,
                                                      args.blas_env, args.tune, args.suffix,
                                                      not args.no_buffer_cache))
    if path:
        _timing.write_json(path, payload)


if __name__ == "__main__":
    main()
