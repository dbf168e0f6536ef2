"""Two settings of the CPU layer's convolution policy on the same case, in one process,
taking turns: what a threshold of kernels/conv_plan.py buys.

    python benchmarks/policy_ab.py --cases 'r20 conv3x3/s1 64->64' \
        --a winograd_lanes_max_width=None --b ''
    python benchmarks/policy_ab.py --goals --a winograd_lanes_max_width=None,\
winograd_weight_grad_lanes_max_width=None --b '' --save --suffix lanes

A and B are changes to the default ConvPolicy ('' for none), `field=value` pairs whose
values Python reads (None, 8, 0.5). Each case is cpu_bench.py's (the same names, the same
tinyres step of cpu_engines.py), built once; then, after `--warmup` steps under each
policy, `--rounds` rounds of one A step and one B step, in the order A B, B A, A B, ...
so that neither always runs first. The machine's drift on a shared 2-core machine moves
both alike, which separate processes (cpu_bench.py's way, right for comparing engines)
cannot promise for two settings of one engine. The table gives each side's median, the
ratio of the medians and the median of the per-round ratios B/A (below 1: B is faster),
and the plans A and B give the case's convolutions.

One process, tinyres only, the environment as it is (OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE, if set, are removed, as cpu_bench.py does by default, unless
`--blas-env inherit`). `--save` writes
benchmarks/results/cpu_f<family>m<model>_<commit>_policy_ab[_<suffix>].json.
"""
import argparse
import ast
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _process  # noqa: E402
import _timing  # noqa: E402
import cpu_bench  # noqa: E402
import cpu_engines  # noqa: E402


def parse_policy(text):
    """'a=1,b=None' -> {'a': 1, 'b': None}; every name a field of ConvPolicy."""
    import dataclasses

    from tinyres.kernels import conv_plan
    fields = {f.name for f in dataclasses.fields(conv_plan.ConvPolicy)}
    changes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise ValueError(f"policy_ab: expected field=value with a field of ConvPolicy "
                             f"({', '.join(sorted(fields))}), got {item!r}")
        changes[name] = ast.literal_eval(value.strip())
    return changes


def plans(case, changes):
    """The algorithms the policy picks for the case's convolutions (conv cases only), as
    'forward/input gradient/weight gradient'."""
    from tinyres.kernels import conv_plan
    if case["kind"] != "conv":
        return None
    with conv_plan.conv_policy(**changes):
        plan = conv_plan.conv_algorithm(
            (case["n"], case["c"], case["h"], case["w"]),
            (case["oc"], case["c"], case["k"], case["k"]), case["stride"], case["pad"])
    return f"{plan.forward}/{plan.grad_input}/{plan.grad_weight}"


def run_case(case, a, b, rounds, warmup, threads):
    """Build the case once, then time its step under A and B in turns; returns the row."""
    import numpy as np

    from tinyres.kernels import conv_plan
    step = cpu_engines.make_tinyres_step(case, np, threads)

    def timed(changes):
        with conv_plan.conv_policy(**changes):
            start = time.perf_counter()
            step()
            return (time.perf_counter() - start) * 1e3

    for _ in range(warmup):
        timed(a), timed(b)
    ms_a, ms_b = [], []
    for r in range(rounds):
        if r % 2:
            ms_b.append(timed(b))
            ms_a.append(timed(a))
        else:
            ms_a.append(timed(a))
            ms_b.append(timed(b))
    med_a, med_b = statistics.median(ms_a), statistics.median(ms_b)
    return {"case": case, "ms_a": ms_a, "ms_b": ms_b, "median_a": med_a, "median_b": med_b,
            "ratio_b_a": med_b / med_a,
            "paired_ratio_b_a": statistics.median(y / x for x, y in zip(ms_a, ms_b)),
            "plan_a": plans(case, a), "plan_b": plans(case, b)}


COLUMNS = [("case", 46), ("A ms", 9), ("B ms", 9), ("B/A", 6), ("paired", 7)]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", default="", help="policy A: field=value,... ('' the default)")
    ap.add_argument("--b", default="", help="policy B: field=value,... ('' the default)")
    sets = ap.add_mutually_exclusive_group()
    sets.add_argument("--goals", action="store_true", help="cpu_bench.py's goal cases")
    sets.add_argument("--small", action="store_true",
                      help="cpu_bench.py's small-batch cases (resnet20 at batch 8 and 32)")
    sets.add_argument("--tiny", action="store_true",
                      help="cpu_bench.py's toy cases: checks the script, measures nothing")
    ap.add_argument("--cases", metavar="PATTERN", help="regular expression on case names")
    ap.add_argument("--rounds", type=int, default=15, help="rounds of one A and one B step")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps under each first")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--blas-env", choices=_process.BLAS_ENV_SETTINGS, default="detect")
    ap.add_argument("--save", action="store_true", help="write the JSON to benchmarks/results")
    ap.add_argument("--json", metavar="PATH", help="write the JSON here")
    ap.add_argument("--suffix", help="appended to the automatic results-file name")
    args = ap.parse_args(argv)
    _process.rerun_without_blas_variables(args.blas_env, __file__, argv)
    try:
        a, b = parse_policy(args.a), parse_policy(args.b)
    except (ValueError, SyntaxError) as err:
        ap.error(str(err))
    pool = (cpu_bench.goals_cases() if args.goals else cpu_bench.tiny_cases() if args.tiny
            else cpu_bench.small_batch_cases() if args.small else cpu_bench.all_cases())
    cases = _timing.select(pool, args.cases)
    if not cases:
        ap.error(f"no case matches {args.cases!r} (cpu_bench.py --list names them)")
    info = _timing.machine_info()
    print("\n".join(_timing.header_lines(info)))
    print(f"policy A: {a or 'the default'}; policy B: {b or 'the default'}; "
          f"{args.rounds} rounds of A and B in turns after {args.warmup} warm-up steps each, "
          f"{args.threads} threads, one process")
    _timing.print_header(COLUMNS)
    rows = []
    for case in cases:
        case = dict(case, threads=args.threads)
        row = run_case(case, a, b, args.rounds, args.warmup, args.threads)
        rows.append(row)
        _timing.print_row(COLUMNS, [case["name"], f"{row['median_a']:.2f}",
                                    f"{row['median_b']:.2f}", f"{row['ratio_b_a']:.2f}",
                                    f"{row['paired_ratio_b_a']:.2f}"])
        if row["plan_a"] != row["plan_b"]:
            print(f"    A: {row['plan_a']}   B: {row['plan_b']}")
    payload = {"format": 1, "kind": "policy_ab", "machine": info,
               "settings": {"a": a, "b": b, "rounds": args.rounds, "warmup": args.warmup,
                            "threads": args.threads, "blas_env": args.blas_env,
                            "argv": argv},
               "rows": rows}
    path = args.json
    if args.save:
        path = _timing.results_path(info, "_".join(filter(None, ["policy_ab", args.suffix])))
    if path:
        _timing.write_json(path, payload)


if __name__ == "__main__":
    main()
