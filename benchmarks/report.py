"""Regenerate the CPU-benchmark tables of README.md and benchmarks/README.md from committed
results files, so that no figure in them is typed by hand.

A table lives between two markers; the first names the kind of table and its files
(paths relative to benchmarks/), and options as key=value:

    <!-- table: cpu-rows results/cpu_XXX.json -->
    ... generated, never edited by hand ...
    <!-- /table -->

Kinds (each opens with a header read from the file: CPU family/model/SIMD flags and cores,
the BLAS, its kernel and threads, the settings, the versions and the commit):
  cpu-rows FILE [match=REGEX]   every row of a cpu_bench.py file (or those whose case name
                                matches; '_' in REGEX stands for a space)
  cpu-runs FILE... [match=REGEX] [label=A,B...]  one line per file: the first row
                                matching REGEX (default: the resnet20 training step); the
                                labels ('_' for a space) replace the files' tuning setting
  cpu-first-calls FILE [match=REGEX]  the first calls of a fresh process per engine (the
                                'first_calls' rows of newer files)
  roofline PEAKS FILE [match=REGEX]  roofline.py's peaks beside each layer of FILE
  callgrind FILE...             callgrind_layer.py counts, and the spread of repeated runs
  winograd-gemm FILE            winograd_gemm.py's split of a Winograd task and its GEMMs'
                                rates beside one thread's GEMM peak
  gpu-model                     gpu_model.py's predicted resnet50 step (computed, no file)

    python benchmarks/report.py            # rewrite the tables in place
    python benchmarks/report.py --check    # exit 1 with a diff where the text differs
"""
import argparse
import difflib
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _process  # noqa: E402
import conv_bench  # noqa: E402
import gpu_model  # noqa: E402
import roofline  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
DOCS = (os.path.join(ROOT, "README.md"), os.path.join(BENCH, "README.md"))
MARKER = re.compile(r"(?P<open><!-- table: (?P<spec>[^\n]*?) -->\n)(?P<body>.*?)"
                    r"(?P<close><!-- /table -->)", re.S)
ENGINE_ORDER = ("tinyres", "torch", "torch_compile", "torch.compile", "numpy")
SETTING_KEYS = ("alloc", "blas_env", "setting", "timing", "measure")
DEFAULT_RUN_MATCH = "resnet20 train"


# ----- reading --------------------------------------------------------------------------------
def load(relpath, base=BENCH):
    with open(os.path.join(base, relpath)) as f:
        return json.load(f)


def engines_of(record):
    """Every engine that appears in the file's rows, in a fixed order, unknown ones last."""
    seen = list(file_settings(record).get("engines") or [])
    for row in record.get("rows", []):
        seen += [e for e in row.get("results", {}) if e not in seen]
    known = [e for e in ENGINE_ORDER if e in seen]
    return known + [e for e in seen if e not in known]


def row_setting(row):
    """What a row was run under beyond the file's settings (allocator, timing...), or ''."""
    case = row.get("case", {})
    parts = []
    for key in SETTING_KEYS:
        value = row.get(key, case.get(key))
        if value not in (None, "", False):
            parts.append(f"{key} {value}" if value is not True else key)
    return ", ".join(parts)


def result_ms(row, engine):
    res = row.get("results", {}).get(engine) or {}
    return res.get("ms")


def ratio(row, engine, reference):
    a, b = result_ms(row, engine), result_ms(row, reference)
    return a / b if a is not None and b else None


def select_rows(record, match):
    rx = re.compile(match.replace("_", " ")) if match else None
    return [r for r in record.get("rows", [])
            if rx is None or rx.search(r.get("case", {}).get("name", ""))]


# ----- the header -----------------------------------------------------------------------------
def cpu_text(machine):
    ident = machine.get("cpu_identity") or {}
    name = ident.get("model name") or machine.get("cpu") or "unknown CPU"
    text = f"{name}, {machine.get('cores', '?')} cores"
    if not ident:
        return text + " (CPU family, model and SIMD flags not recorded in this file)"
    flags = " ".join(ident.get("simd_flags") or []) or "none listed"
    return (f"{text}, {ident.get('vendor_id', '?')} family {ident.get('cpu family', '?')} "
            f"model {ident.get('model', '?')}, SIMD: {flags}")


def _library_owner(path):
    for owner in ("numpy", "scipy", "torch"):
        if f"/{owner}.libs/" in (path or "") or f"/{owner}/" in (path or ""):
            return owner + "'s "
    return ""


def blas_text(machine):
    blas = machine.get("blas") or {}
    libs = blas.get("libraries")
    if not libs:
        return "BLAS, its kernel and threads not recorded in this file"
    parts = [f"{_library_owner(lib.get('filepath'))}{lib.get('internal_api', '?')} "
             f"{lib.get('version', '?')} ({lib.get('architecture') or '?'} kernel, "
             f"{lib.get('num_threads', '?')} threads)" for lib in libs]
    env = blas.get("environment")
    env_text = (" ".join(f"{k}={v}" for k, v in sorted(env.items())) if env
                else "no OPENBLAS_* variable")
    return "BLAS: " + "; ".join(parts) + f"; environment: {env_text}"


def file_settings(record):
    """The run's settings: the 'settings' block of newer files over the top-level keys of
    older ones."""
    return {**record, **(record.get("settings") or {})}


def settings_text(record):
    opts, parts = file_settings(record), []
    tuned = opts.get("tinyres_tuned", opts.get("tinyres_tune"))
    parts.append("tinyres " + ("tuned (runtime.tune())" if tuned else "untuned") if tuned
                 is not None else "tinyres tuning not recorded")
    if opts.get("tinyres_buffer_cache") is False:
        parts.append("tinyres's buffer cache off")
    for key in ("alloc", "blas_env", "blas_env_removed"):
        if opts.get(key) not in (None, [], {}):
            value = opts[key]
            parts.append(f"{key} " + (" ".join(map(str, value)) if isinstance(value, list)
                                      else str(value)))
    if opts.get("alloc") is None:
        parts.append("allocator setting not recorded")
    if opts.get("threads"):
        parts.append(f"{opts['threads']} threads per engine")
    if opts.get("rounds"):
        parts.append(f"{opts['rounds']} rounds x {opts.get('reps', '?')} reps after "
                     f"{opts.get('warmup', '?')} warm-up" + (
                         f", {opts['settle_s']} s of quiet before each round"
                         if opts.get("settle_s") else ""))
    return "settings: " + ", ".join(parts)


def worker_text(info):
    """One engine's worker, as it reported itself: BLAS kernels and threads, Numba's
    threading layer, torch's threads, the malloc environment."""
    parts = []
    blas = info.get("blas") or []
    parts.append("BLAS " + (", ".join(f"{lib.get('internal_api', '?')} "
                                      f"{lib.get('architecture') or '?'} "
                                      f"x{lib.get('num_threads', '?')}" for lib in blas)
                            or "none seen"))
    numba = info.get("numba") or {}
    if numba.get("threading_layer"):
        parts.append(f"Numba {numba['threading_layer']} x{numba.get('num_threads', '?')}"
                     f"{_process.target_text(numba.get('target'))}")
    torch = info.get("torch") or {}
    if torch.get("num_threads"):
        parts.append(f"torch x{torch['num_threads']} {torch.get('cpu_capability', '')}".strip())
    malloc = (info.get("env") or {}).get("malloc")
    if malloc is not None:
        parts.append("malloc " + (" ".join(f"{k}={v}" for k, v in sorted(malloc.items()))
                                  or "default"))
    return "; ".join(parts)


def workers_lines(record):
    """A line per (setting, engine) from the workers' own reports, where the file has them."""
    lines = []
    for setting, engines in (record.get("engines_info") or {}).items():
        for engine, info in (engines or {}).items():
            if isinstance(info, dict):
                lines.append(f"- {engine} worker ({setting}): {worker_text(info)}.")
    return lines


def versions_text(machine):
    return (f"numpy {machine.get('numpy', '?')}, numba {machine.get('numba', '?')}, "
            f"torch {machine.get('torch', '?')}; commit {machine.get('commit', '?')}, "
            f"{machine.get('date', '?')}, load average "
            f"{_num(machine.get('loadavg_at_start'), '.1f')} at start")


def machine_lines(machine, relpath):
    """A results file's name with the CPU it ran on, then its BLAS libraries and kernels."""
    return [f"`benchmarks/{relpath}`: {cpu_text(machine)}.", blas_text(machine) + "."]


def header(record, relpath, workers=True):
    """The lines that say what a file's figures ran on (and, with `workers`, what each
    engine's worker reported of itself)."""
    machine = record.get("machine") or {}
    lines = machine_lines(machine, relpath) + [settings_text(record) + ".",
                                               versions_text(machine) + "."]
    engines = workers_lines(record) if workers else []
    return lines + ([""] + engines if engines else [])


# ----- tables ---------------------------------------------------------------------------------
def _num(value, spec):
    return "-" if value is None else format(value, spec)


def _cell(row, engine, field, spec):
    res = row.get("results", {}).get(engine)
    if res is None:
        return "-"
    if "error" in res and res.get("ms") is None:
        return "error"
    return _num(res.get(field), spec)


def markdown(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


def cpu_rows_table(record, match=None):
    """The rows of one cpu_bench.py file as a markdown table."""
    engines = engines_of(record)
    refs = [e for e in engines if e not in ("tinyres", "numpy")] if "tinyres" in engines else []
    rows = select_rows(record, match)
    with_setting = any(row_setting(r) for r in rows)
    with_compile = any(r.get("compile_s") is not None for r in rows)
    head = ["case"] + (["setting"] if with_setting else []) + [f"{e} ms" for e in engines]
    head += [f"tinyres / {e}" for e in refs] + [f"{e} GFLOP/s" for e in engines]
    head += [f"{e} MB" for e in engines] + (["compile s"] if with_compile else [])
    body = []
    for r in rows:
        line = [r.get("case", {}).get("name", "?")] + ([row_setting(r)] if with_setting else [])
        line += [_cell(r, e, "ms", ".2f") for e in engines]
        line += [_num(ratio(r, "tinyres", e), ".2f") for e in refs]
        line += [_cell(r, e, "gflops", ".1f") for e in engines]
        line += [_cell(r, e, "peak_rss_mb", ".0f") for e in engines]
        line += [_num(r.get("compile_s"), ".1f")] if with_compile else []
        body.append(line)
    return markdown(head, body)


def first_calls_table(record, match=None):
    """The first calls of a fresh process per engine (newer files' 'first_calls' rows): the
    first call and the median of the later ones."""
    engines = engines_of(record)
    head = ["case", "setting"] + [f"{e} 1st ms" for e in engines]
    head += [f"{e} later ms" for e in engines] + ["tinyres / torch, 1st"]
    body = []
    rx = re.compile(match.replace("_", " ")) if match else None
    for r in record.get("first_calls", []):
        name = r.get("case", {}).get("name", "?")
        if rx and not rx.search(name):
            continue
        calls = {e: (r.get("results", {}).get(e) or {}).get("calls_ms") or [] for e in engines}
        first = {e: calls[e][0] if calls[e] else None for e in engines}
        later = {e: sorted(calls[e][1:])[len(calls[e][1:]) // 2] if len(calls[e]) > 1
                 else None for e in engines}
        ratio_first = (first.get("tinyres") / first["torch"]
                       if first.get("tinyres") and first.get("torch") else None)
        body.append([name, row_setting(r)] + [_num(first[e], ".1f") for e in engines]
                    + [_num(later[e], ".1f") for e in engines] + [_num(ratio_first, ".2f")])
    return markdown(head, body)


def cpu_runs_table(records, match=None, labels=None):
    """One line per file: the first row matching `match`, tinyres beside torch."""
    head = ["file", "commit", "tinyres", "CPU", "BLAS kernel", "case", "tinyres ms",
            "torch ms", "tinyres / torch", "tinyres MB", "torch MB"]
    body = []
    for i, (relpath, record) in enumerate(records):
        rows = select_rows(record, match or DEFAULT_RUN_MATCH)
        if not rows:
            continue
        r, machine = rows[0], record.get("machine") or {}
        ident = machine.get("cpu_identity") or {}
        cpu = (f"f{ident['cpu family']}m{ident['model']} "
               + ("avx512f" if "avx512f" in ident.get("simd_flags", []) else
                  "avx2" if "avx2" in ident.get("simd_flags", []) else "no avx2")
               if ident else "not recorded")
        kernels = sorted({lib.get("architecture") or "?"
                          for lib in (machine.get("blas") or {}).get("libraries", [])})
        tuned = record.get("tinyres_tuned")
        label = labels[i] if labels and i < len(labels) else (
            "not recorded" if tuned is None else "tuned" if tuned else "untuned")
        body.append([f"`{os.path.basename(relpath)}`", machine.get("commit", "?"), label, cpu,
                     "/".join(kernels) or "not recorded", r["case"]["name"],
                     _cell(r, "tinyres", "ms", ".1f"), _cell(r, "torch", "ms", ".1f"),
                     _num(ratio(r, "tinyres", "torch"), ".2f"),
                     _cell(r, "tinyres", "peak_rss_mb", ".0f"),
                     _cell(r, "torch", "peak_rss_mb", ".0f")])
    return markdown(head, body)


def same_cpu(peaks_record, record):
    """Whether both files record the same CPU (vendor, family, model, name, flags)."""
    ident = (peaks_record.get("machine") or {}).get("cpu_identity")
    return bool(ident) and ident == (record.get("machine") or {}).get("cpu_identity")


def roofline_table(peaks_record, record, match=None):
    """Each layer's FLOPs, bytes and roofline bound, and each engine's share of it; a whole
    model's bound is its FLOPs at the GEMM peak (its bytes are not counted). The shares
    are left out ('-') unless both files record the same CPU."""
    peaks, comparable = peaks_record["peaks"], same_cpu(peaks_record, record)
    engines = [e for e in engines_of(record) if e != "numpy"]
    head = ["case", "MFLOP", "MB moved", "bound ms", "limit"]
    head += [f"{e} ms" for e in engines] + [f"{e} % of bound" for e in engines]
    body = []
    for r in select_rows(record, match):
        case = r.get("case", {})
        b = roofline.layer_bound(case, peaks)
        moved = "-" if b["bytes"] is None else _num(b["bytes"] / 1e6, ".1f")
        line = [case.get("name", "?"), _num(b["flops"] / 1e6, ".0f"), moved,
                _num(b["bound_ms"], ".2f"), b["limit"]]
        line += [_cell(r, e, "ms", ".2f") for e in engines]
        line += [_pct(roofline.achieved_fraction(b["bound_ms"], result_ms(r, e)))
                 if comparable else "-" for e in engines]
        body.append(line)
    return markdown(head, body)


def _pct(fraction):
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


def roofline_header(peaks_record, relpath, record):
    peaks, machine = peaks_record["peaks"], peaks_record.get("machine") or {}
    lines = [f"Peaks (`benchmarks/{relpath}`): GEMM {peaks['gemm_gflops']:.1f} GFLOP/s "
             f"({peaks['gemm_method']}), bandwidth {peaks['bandwidth_gbs']:.1f} GB/s "
             f"({peaks['bandwidth_method']}); {cpu_text(machine)}; {blas_text(machine)}; "
             f"{versions_text(machine)}."]
    if not same_cpu(peaks_record, record):
        lines.append("The timings' file does not record the same CPU (family, model, flags) "
                     "as the peaks': the shares of the bound are left out.")
    return lines


def callgrind_table(records):
    """One line per callgrind_layer.py file, and the spread of the counts of repeated runs
    (same case, engine, batch and commit)."""
    head = ["file", "case", "engine", "batch", "steps", "instructions per step", "commit",
            "Numba CPU"]
    body, groups = [], {}
    for relpath, rec in records:
        case, machine = rec.get("case", {}), rec.get("machine") or {}
        per_step = rec.get("instructions_per_step")
        body.append([f"`{os.path.basename(relpath)}`", case.get("name", "?"),
                     rec.get("engine", "?"), rec.get("batch", "?"), rec.get("steps", "?"),
                     _num(per_step, ",d"), machine.get("commit", "?"),
                     (rec.get("environment") or {}).get("NUMBA_CPU_NAME", "-")])
        key = (case.get("name"), rec.get("engine"), rec.get("batch"), machine.get("commit"))
        groups.setdefault(key, []).append(per_step)
    lines = markdown(head, body) + [""]
    for (name, engine, batch, commit), counts in groups.items():
        if len(counts) > 1 and None not in counts:
            spread = (max(counts) - min(counts)) / min(counts)
            lines.append(f"- {engine}, {name} at batch {batch}, commit {commit}: "
                         f"{len(counts)} runs, spread {100 * spread:.3f}% "
                         f"({min(counts):,} to {max(counts):,}).")
    if not records:
        return lines
    rec = records[0][1]
    machine = rec.get("machine") or {}
    kernels = sorted({lib.get("architecture") or "?"
                      for lib in (machine.get("blas") or {}).get("libraries", [])})
    env = " ".join(f"{k}={v}" for k, v in sorted((rec.get("environment") or {}).items())
                   if k != "NUMBA_CPU_FEATURES")
    return lines + [f"- {cpu_text(machine)}; BLAS kernel {'/'.join(kernels) or 'not recorded'}"
                    f"; {rec.get('valgrind', 'valgrind version not recorded')}; counted with "
                    f"{env or 'no recorded environment'}."]


def winograd_gemm_table(record, relpath):
    """winograd_gemm.py's rows: one task's split (its GEMMs by the BLAS), and the GEMMs'
    rates four ways, the BLAS's as a share of one thread's GEMM peak."""
    machine, peak = record.get("machine") or {}, record["peak_one_thread_gflops"]
    head = ["layer", "images a task", "tiles a task", "input / GEMMs / output",
            "GEMMs by the BLAS GFLOP/s", "tile-major", "8 images a task", "Numba loop",
            "BLAS, share of peak", "task ms an image", "8 images a task, ms an image"]
    body = []
    for r in record["rows"]:
        s, g = r["share"], r["gflops"]
        body.append([f"{r['case']} {r['n']}x{r['c']}x{r['hw']}x{r['hw']}", r["images_per_task"],
                     r["tiles_per_task"],
                     f"{s['input']:.0%} / {s['gemm']:.0%} / {s['output']:.0%}",
                     f"{g['as_run']:.1f}", f"{g['tile_major']:.1f}", f"{g['images_8x']:.1f}",
                     f"{g['numba_loop']:.1f}", _pct(g["as_run"] / peak),
                     f"{r['ms_per_image']:.3f}", f"{r['ms_per_image_8x']:.3f}"])
    return (machine_lines(machine, relpath) + [
             f"{versions_text(machine)}; Numba compiled for"
             f"{_process.target_text(record.get('numba_target')) or ' (not recorded)'}; "
             f"one thread, best of {record.get('reps')} timings, "
             f"BLAS environment {record.get('blas_env')}; one thread's float32 GEMM peak "
             f"(1024 x 1024): {peak:.1f} GFLOP/s.", ""] + markdown(head, body))


def _policy_text(changes):
    return ", ".join(f"{k}={v}" for k, v in changes.items()) or "the default"


def policy_ab_table(record, relpath):
    """policy_ab.py's rows: each case under policy A and policy B in one process, taking
    turns, the medians and the ratios B/A, and the plans where they differ."""
    machine, settings = record.get("machine") or {}, record["settings"]
    head = ["case", "A ms", "B ms", "B / A", "paired B / A", "A's plan", "B's plan"]
    body = [[r["case"]["name"], f"{r['median_a']:.2f}", f"{r['median_b']:.2f}",
             f"{r['ratio_b_a']:.2f}", f"{r['paired_ratio_b_a']:.2f}",
             r["plan_a"] or "-", r["plan_b"] or "-"] for r in record["rows"]]
    return (machine_lines(machine, relpath) + [
             f"{versions_text(machine)}; policy A: {_policy_text(settings['a'])}; "
             f"policy B: {_policy_text(settings['b'])}; {settings['rounds']} rounds of an A "
             f"and a B step in turns after {settings['warmup']} warm-up steps each, "
             f"{settings['threads']} threads, one process, BLAS environment "
             f"{settings['blas_env']}.", ""] + markdown(head, body))


def _dig(record, path):
    for key in path.split(".") if path else []:
        record = record[key]
    return record


def gpu_conv_table(outer, relpath, key, ops=("fwd+bwd",)):
    """conv_bench.py's GPU rows from a results file (the run under `key` in it): each
    convolution's times beside cuDNN's, the geometric means, the training steps."""
    record = _dig(outer, key)
    m = record["machine"]
    commit = outer.get("commit") or m.get("commit")
    precision = "TF32" if record["tf32"] else "strict FP32"
    gm = record["geomean_resnet50"]
    warmup, reps = conv_bench.GPU_REPS[bool(record.get("quick"))]
    lines = [f"`benchmarks/{relpath}`{f' ({key})' if key else ''}: {m.get('gpu')}, CuPy "
             f"{m.get('cupy')} ({m.get('cupy_compute_type')}), torch {m.get('torch')} "
             f"({m.get('torch_precision')}), commit {str(commit)[:7]}; {precision} on both "
             f"sides; median of {reps} timings (CUDA events) after {warmup} warm-ups.",
             f"Geometric mean of tinyres / cuDNN over the resnet50 shapes: forward "
             f"{gm['fwd']:.2f}, forward+backward {gm['fwd+bwd']:.2f}.", ""]
    head = ["convolution", "tinyres ms", "cuDNN ms", "ratio", "tinyres MB", "cuDNN MB",
            "max rel err"]
    body = []
    for r in record["shapes"]:
        if r["case"]["op"] not in ops:
            continue
        t, f, c = r.get("tinyres", {}), r.get("ref", {}), r.get("check") or {}
        body.append([r["case"]["name"], _num(t.get("ms"), ".2f"), _num(f.get("ms"), ".2f"),
                     _num(r.get("ratio"), ".2f"), _num(t.get("peak_mb"), ".0f"),
                     _num(f.get("peak_mb"), ".0f"),
                     _num(c.get("max_rel_err"), ".1e") + ("" if c.get("ok") else " FAIL")])
    lines += markdown(head, body) + [""]
    head = ["training step", "tinyres img/s", "torch img/s", "ratio (time)", "tinyres MB",
            "torch MB", "tinyres launches", "host reads"]
    body = []
    for r in record["models"]:
        t, f = r.get("tinyres", {}), r.get("ref", {})
        per = t.get("per_step", {})
        body.append([r["case"]["name"], _num(t.get("images_per_s"), ".0f"),
                     _num(f.get("images_per_s"), ".0f"), _num(r.get("ratio"), ".2f"),
                     _num(t.get("peak_mb"), ".0f"), _num(f.get("peak_mb"), ".0f"),
                     _num(per.get("launches"), "d"), _num(per.get("host_reads"), "d")])
    return lines + markdown(head, body)


# ----- blocks ---------------------------------------------------------------------------------
def parse_spec(spec):
    """'KIND FILE... key=value...' -> (kind, files, options)."""
    words = spec.split()
    options = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    return words[0], [w for w in words[1:] if "=" not in w], options


def render(spec, base=BENCH):
    """The generated text of one marker (without the markers)."""
    kind, files, opts = parse_spec(spec)
    match = opts.get("match")
    if kind == "cpu-rows":
        record = load(files[0], base)
        lines = header(record, files[0]) + [""] + cpu_rows_table(record, match)
    elif kind == "cpu-first-calls":
        record = load(files[0], base)
        lines = header(record, files[0]) + [""] + first_calls_table(record, match)
    elif kind == "callgrind":
        lines = callgrind_table([(f, load(f, base)) for f in files])
    elif kind == "cpu-runs":
        records = [(f, load(f, base)) for f in files]
        labels = opts["label"].replace("_", " ").split(",") if "label" in opts else None
        lines = cpu_runs_table(records, match, labels) + [""]
        for f, rec in records:
            lines += ["- " + " ".join(header(rec, f, workers=False))]
    elif kind == "roofline":
        peaks, record = load(files[0], base), load(files[1], base)
        lines = (roofline_header(peaks, files[0], record) + header(record, files[1]) + [""]
                 + roofline_table(peaks, record, match))
    elif kind == "gpu-model":
        lines = gpu_model.readme_lines()
    elif kind == "gpu-conv":
        lines = gpu_conv_table(load(files[0], base), files[0], opts.get("key", ""))
    elif kind == "winograd-gemm":
        lines = winograd_gemm_table(load(files[0], base), files[0])
    elif kind == "policy-ab":
        lines = policy_ab_table(load(files[0], base), files[0])
    else:
        raise ValueError(f"report.py: unknown table kind {kind!r} in marker {spec!r}")
    return "\n".join(lines) + "\n"


def regenerate(text, base=BENCH):
    """`text` with the body of every table marker rebuilt from its files."""
    def block(m):
        return m.group("open") + render(m.group("spec"), base) + m.group("close")
    return MARKER.sub(block, text)


def check(paths=DOCS, base=BENCH):
    """{path: unified diff} for every document whose tables differ from their files."""
    diffs = {}
    for path in paths:
        with open(path) as f:
            text = f.read()
        new = regenerate(text, base)
        if new != text:
            diffs[path] = "".join(difflib.unified_diff(
                text.splitlines(True), new.splitlines(True), path, path + " (regenerated)"))
    return diffs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 with a diff if a table differs from its file")
    args = ap.parse_args(argv)
    diffs = check()
    if args.check:
        for diff in diffs.values():
            sys.stdout.write(diff)
        return 1 if diffs else 0
    for path in diffs:
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(regenerate(text))
        print(f"rewrote {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
