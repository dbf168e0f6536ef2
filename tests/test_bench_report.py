"""The benchmark reporting tools: README tables regenerated from results files
(benchmarks/report.py), the roofline arithmetic (benchmarks/roofline.py) and the
callgrind instruction counter's argument handling and dump parsing
(benchmarks/callgrind_layer.py), plus one real count where valgrind is installed."""
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import callgrind_layer  # noqa: E402
import report  # noqa: E402
import roofline  # noqa: E402

CONV = {"name": "r20 conv3x3/s1 16->16 128x16x32x32 fwd", "kind": "conv", "op": "fwd",
        "flops": 603979776, "n": 128, "c": 16, "h": 32, "w": 32, "oc": 16, "k": 3,
        "stride": 1, "pad": 1}
MACHINE = {"cpu_identity": {"vendor_id": "AuthenticAMD", "cpu family": "26", "model": "2",
                            "model name": "AMD EPYC 9999",
                            "simd_flags": ["avx2", "avx512f", "amx_tile"]},
           "blas": {"libraries": [{"filepath": "/x/numpy.libs/libopenblas.so",
                                   "internal_api": "openblas", "version": "0.3.31",
                                   "architecture": "Zen", "num_threads": 2}],
                    "environment": {"OPENBLAS_CORETYPE": "Haswell"}},
           "cpu": "AMD EPYC 9999", "cores": 2, "numpy": "2.4.6", "numba": "0.68.1",
           "torch": "2.13.0", "commit": "abc1234", "date": "2026-12-03 10:00:00",
           "loadavg_at_start": 0.5}


def fake_record():
    """A small results file: a conv row with torch.compile missing, a model row where
    torch.compile errored, a row run under an allocator setting."""
    model = {"name": "resnet20 train step batch 128", "kind": "train", "model": "resnet20",
             "n": 128, "flops": 31143198720}
    return {"machine": copy.deepcopy(MACHINE), "rounds": 3, "reps": 3, "warmup": 1,
            "threads": 2, "tinyres_tuned": False, "alloc": "both",
            "engines": ["tinyres", "torch"],
            "rows": [
                {"case": CONV, "results": {"tinyres": {"ms": 4.0, "gflops": 151.0,
                                                       "peak_rss_mb": 17.2},
                                           "torch": {"ms": 8.0, "gflops": 75.5,
                                                     "peak_rss_mb": 46.0}}},
                {"case": dict(model, alloc="tuned"),
                 "results": {"tinyres": {"ms": 200.0, "peak_rss_mb": 300.0},
                             "torch": {"ms": 250.0, "peak_rss_mb": 310.0},
                             "torch.compile": {"error": "RuntimeError: no compiler"}}}]}


# ----- the READMEs against their files ----------------------------------------------------
def test_readmes_match_their_results_files():
    diffs = report.check()
    assert diffs == {}, "run `python benchmarks/report.py`:\n" + "".join(diffs.values())


def test_readmes_have_generated_cpu_tables():
    for doc in report.DOCS:
        text = Path(doc).read_text()
        assert report.MARKER.search(text), doc
    assert "Zen 4" not in (ROOT / "benchmarks" / "README.md").read_text()


def test_check_reports_a_hand_edited_figure(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "fake.json").write_text(json.dumps(fake_record()))
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- table: cpu-rows results/fake.json -->\n<!-- /table -->\nend\n")
    assert list(report.check([str(doc)], str(tmp_path))) == [str(doc)]
    doc.write_text(report.regenerate(doc.read_text(), str(tmp_path)))
    assert report.check([str(doc)], str(tmp_path)) == {}
    doc.write_text(doc.read_text().replace("| 4.00 |", "| 3.50 |"))
    diff = report.check([str(doc)], str(tmp_path))[str(doc)]
    assert "-| r20 conv3x3" in diff and "+| r20 conv3x3" in diff
    assert doc.read_text().startswith("intro\n") and doc.read_text().endswith("end\n")


def test_unknown_table_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown table kind 'cpu-bogus'"):
        report.regenerate("<!-- table: cpu-bogus x.json -->\n<!-- /table -->", str(tmp_path))


# ----- rendering a fake file ----------------------------------------------------------------
def test_header_states_machine_blas_settings_and_commit():
    text = "\n".join(report.header(fake_record(), "results/fake.json"))
    for expected in ("AMD EPYC 9999", "2 cores", "family 26 model 2", "avx512f", "amx_tile",
                     "openblas 0.3.31 (Zen kernel, 2 threads)", "OPENBLAS_CORETYPE=Haswell",
                     "tinyres untuned", "alloc both", "2 threads per engine",
                     "commit abc1234"):
        assert expected in text, expected


def test_header_says_what_an_old_file_does_not_record():
    record = fake_record()
    record["machine"] = {"cpu": "AMD EPYC", "cores": 2, "commit": "2775710"}
    del record["tinyres_tuned"], record["alloc"]
    text = "\n".join(report.header(record, "results/old.json"))
    assert "family, model and SIMD flags not recorded" in text
    assert "BLAS, its kernel and threads not recorded" in text
    assert "tinyres tuning not recorded" in text
    assert "allocator setting not recorded" in text


def test_rows_table_missing_engine_error_and_setting():
    lines = report.cpu_rows_table(fake_record())
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[:5] == ["case", "setting", "tinyres ms", "torch ms", "torch.compile ms"]
    assert "tinyres / torch" in head and "tinyres / torch.compile" in head
    conv = [c.strip() for c in lines[2].strip("|").split("|")]
    row = dict(zip(head, conv))
    assert row["tinyres ms"] == "4.00" and row["tinyres / torch"] == "0.50"
    assert row["torch.compile ms"] == "-" and row["setting"] == ""
    model = dict(zip(head, [c.strip() for c in lines[3].strip("|").split("|")]))
    assert model["torch.compile ms"] == "error" and model["setting"] == "alloc tuned"
    assert model["tinyres / torch"] == "0.80" and model["tinyres / torch.compile"] == "-"
    assert model["tinyres GFLOP/s"] == "-"           # not in the file: not invented


def test_rows_table_match_selects_rows():
    lines = report.cpu_rows_table(fake_record(), "^resnet20_train")
    assert len(lines) == 3 and "resnet20 train step" in lines[2]


def test_runs_table_one_line_per_file():
    old = fake_record()
    old["machine"] = {"commit": "1111111"}
    lines = report.cpu_runs_table([("a.json", fake_record()), ("b.json", old)],
                                  labels=["first"])
    assert len(lines) == 4
    assert "| `a.json` | abc1234 | first | f26m2 avx512f | Zen |" in lines[2]
    assert "| `b.json` | 1111111 | untuned | not recorded | not recorded |" in lines[3]
    assert "| 200.0 | 250.0 | 0.80 | 300 | 310 |" in lines[2]


def format2_record():
    """The newer layout: a 'settings' block, 'torch_compile' as an engine, rows per
    allocator setting with a compile time, first-call rows, each worker's own report."""
    rec = fake_record()
    for key in ("rounds", "reps", "warmup", "threads", "tinyres_tuned", "alloc", "engines"):
        rec.pop(key)
    rec["settings"] = {"rounds": 2, "reps": 3, "warmup": 1, "threads": 2,
                       "alloc": ["default", "tuned"], "blas_env": "clean",
                       "tinyres_tune": False, "engines": ["tinyres", "torch", "torch_compile"]}
    model = rec["rows"][1]
    model["results"]["torch_compile"] = {"ms": 240.0, "first_call_ms": 38000.0}
    model.update(alloc="tuned", measure="warm", compile_s=38.0)
    rec["first_calls"] = [{"alloc": "tuned", "measure": "first_calls", "case": model["case"],
                           "results": {"tinyres": {"calls_ms": [900.0, 210.0, 200.0]},
                                       "torch": {"calls_ms": [300.0, 260.0, 250.0]},
                                       "torch_compile": {"error": {"type": "x"}}}}]
    rec["engines_info"] = {"tuned": {"tinyres": {
        "blas": [{"internal_api": "openblas", "architecture": "SkylakeX", "num_threads": 2}],
        "numba": {"threading_layer": "tbb", "num_threads": 2},
        "env": {"malloc": {"MALLOC_MMAP_THRESHOLD_": "33554432"}}}}}
    return rec


def test_newer_layout_settings_compile_time_and_workers():
    rec = format2_record()
    text = "\n".join(report.header(rec, "results/new.json"))
    assert "tinyres untuned, alloc default tuned, blas_env clean" in text
    assert "2 rounds x 3 reps" in text
    assert ("- tinyres worker (tuned): BLAS openblas SkylakeX x2; Numba tbb x2; "
            "malloc MALLOC_MMAP_THRESHOLD_=33554432.") in text
    lines = report.cpu_rows_table(rec)
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    model = dict(zip(head, [c.strip() for c in lines[3].strip("|").split("|")]))
    assert model["torch_compile ms"] == "240.00" and model["compile s"] == "38.0"
    assert model["setting"] == "alloc tuned, measure warm"
    assert model["tinyres / torch_compile"] == "0.83"


def test_first_calls_table():
    lines = report.first_calls_table(format2_record())
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    row = dict(zip(head, [c.strip() for c in lines[2].strip("|").split("|")]))
    assert row["tinyres 1st ms"] == "900.0" and row["tinyres later ms"] == "210.0"
    assert row["torch later ms"] == "260.0" and row["tinyres / torch, 1st"] == "3.00"
    assert row["torch_compile 1st ms"] == "-"


def test_callgrind_table_gives_the_spread_of_repeated_runs():
    def rec(count, engine="tinyres"):
        return {"machine": {"commit": "abc"}, "case": {"name": "r20 x"}, "engine": engine,
                "batch": 4, "steps": 1, "instructions_per_step": count}
    lines = report.callgrind_table([("a.json", rec(1000000)), ("b.json", rec(1000500)),
                                    ("c.json", rec(700000, "torch"))])
    assert "| `a.json` | r20 x | tinyres | 4 | 1 | 1,000,000 | abc | - |" in lines
    spread = [line for line in lines if "spread" in line]
    assert spread == ["- tinyres, r20 x at batch 4, commit abc: 2 runs, spread 0.050% "
                      "(1,000,000 to 1,000,500)."]


def test_winograd_gemm_table_gives_the_split_the_rates_and_the_share_of_peak():
    record = {"machine": MACHINE, "reps": 7, "blas_env": "detect",
              "numba_target": {"cpu_name": "znver5", "avx512": True, "avx2": True},
              "peak_one_thread_gflops": 80.0,
              "rows": [{"case": "r20 conv3x3/s1 16->16", "n": 128, "c": 16, "hw": 32,
                        "images_per_task": 1, "tiles_per_task": 272,
                        "ms_per_image": 0.1234, "ms_per_image_8x": 0.15,
                        "share": {"input": 0.15, "gemm": 0.75, "output": 0.10},
                        "gflops": {"as_run": 20.0, "tile_major": 30.0, "images_8x": 25.0,
                                   "numba_loop": 22.5}}]}
    lines = report.winograd_gemm_table(record, "results/w.json")
    assert lines[0].startswith("`benchmarks/results/w.json`: AMD EPYC 9999")
    assert "best of 7 timings" in lines[2] and "80.0 GFLOP/s" in lines[2]
    assert "Numba compiled for znver5 AVX-512" in lines[2]
    assert lines[-1] == ("| r20 conv3x3/s1 16->16 128x16x32x32 | 1 | 272 | 15% / 75% / 10% "
                         "| 20.0 | 30.0 | 25.0 | 22.5 | 25% | 0.123 | 0.150 |")


def test_policy_ab_table_gives_both_medians_the_ratios_and_the_plans(tmp_path):
    case = {"name": "r20 conv3x3/s1 64->64 128x64x8x8 fwd+bwd", "kind": "conv"}
    record = {"machine": MACHINE,
              "settings": {"a": {"winograd_lanes_max_width": None}, "b": {}, "rounds": 15,
                           "warmup": 2, "threads": 2, "blas_env": "detect"},
              "rows": [{"case": case, "median_a": 12.5, "median_b": 10.0, "ratio_b_a": 0.8,
                        "paired_ratio_b_a": 0.79, "plan_a": "winograd/winograd/per-image",
                        "plan_b": "winograd-lanes/winograd-lanes/per-image"},
                       {"case": {"name": "resnet20 train step batch 128", "kind": "train"},
                        "median_a": 300.0, "median_b": 291.0, "ratio_b_a": 0.97,
                        "paired_ratio_b_a": 0.968, "plan_a": None, "plan_b": None}]}
    lines = report.policy_ab_table(record, "results/p.json")
    assert lines[0].startswith("`benchmarks/results/p.json`: AMD EPYC 9999")
    assert ("policy A: winograd_lanes_max_width=None; policy B: the default; 15 rounds"
            in lines[2])
    assert lines[-2] == ("| r20 conv3x3/s1 64->64 128x64x8x8 fwd+bwd | 12.50 | 10.00 | 0.80 "
                         "| 0.79 | winograd/winograd/per-image | "
                         "winograd-lanes/winograd-lanes/per-image |")
    assert lines[-1] == "| resnet20 train step batch 128 | 300.00 | 291.00 | 0.97 | 0.97 | - | - |"
    (tmp_path / "p.json").write_text(json.dumps(record))
    assert report.render("policy-ab p.json", base=str(tmp_path)).splitlines()[-1] == lines[-1]


# ----- roofline arithmetic, by hand -------------------------------------------------------
def test_gpu_conv_table_reads_the_run_where_the_file_keeps_it():
    conv = {"machine": {"gpu": "G", "cupy": "14", "cupy_compute_type": "FP32", "torch": "2",
                        "torch_precision": {"cudnn_conv": "ieee"}, "commit": "stale"},
            "tf32": False, "geomean_resnet50": {"fwd": 1.5, "fwd+bwd": 1.25},
            "shapes": [{"case": {"name": "c fwd+bwd", "op": "fwd+bwd"}, "ratio": 2.0,
                        "tinyres": {"ms": 2.0, "peak_mb": 10.0}, "ref": {"ms": 1.0},
                        "check": {"max_rel_err": 3e-4, "ok": False}},
                       {"case": {"name": "c fwd", "op": "fwd"}, "ratio": 1.0}],
            "models": [{"case": {"name": "m"}, "ratio": 1.5, "ref": {"images_per_s": 30.0},
                        "tinyres": {"images_per_s": 20.0, "per_step": {"launches": 7,
                                                                       "host_reads": 0}}}]}
    lines = report.gpu_conv_table({"commit": "abcdef12", "run": conv}, "results/g.json",
                                  "run")
    text = "\n".join(lines)
    assert "commit abcdef1; strict FP32" in text and "forward+backward 1.25" in text
    assert "| c fwd+bwd | 2.00 | 1.00 | 2.00 | 10 | - | 3.0e-04 FAIL |" in text
    assert "c fwd |" not in text                    # forward-only rows are left out
    assert "| m | 20 | 30 | 1.50 | - | - | 7 | 0 |" in text


def test_conv_flops_and_bytes_by_hand():
    # x: 128*16*32*32 = 2,097,152; w: 16*16*3*3 = 2,304; y: 128*16*32*32 = 2,097,152
    assert CONV["flops"] == 2 * 128 * 16 * 32 * 32 * 16 * 9
    assert roofline.case_bytes(CONV) == 4 * (2097152 + 2304 + 2097152)           # 16,786,432
    both = dict(CONV, op="fwd+bwd", flops=3 * CONV["flops"])
    assert roofline.case_bytes(both) == 4 * (3 * 2097152 + 3 * 2304 + 2 * 2097152)
    strided = dict(CONV, stride=2, oc=32)        # y: 128*32*16*16 = 1,048,576
    assert roofline.case_bytes(strided) == 4 * (2097152 + 32 * 16 * 9 + 1048576)


def test_pointwise_bytes_by_hand():
    bn = {"kind": "batchnorm", "op": "fwd+bwd", "n": 2, "c": 3, "h": 4, "w": 5}
    assert roofline.case_bytes(bn) == 4 * (5 * 120 + 6 * 3)
    assert roofline.case_bytes(dict(bn, kind="relu")) == 4 * 5 * 120
    assert roofline.case_bytes({"kind": "train", "n": 128}) is None


def test_bound_is_the_larger_of_compute_and_memory():
    peaks = {"gemm_gflops": 100.0, "bandwidth_gbs": 10.0}
    b = roofline.layer_bound(CONV, peaks)
    assert b["limit"] == "compute"
    assert b["bound_ms"] == pytest.approx(603979776 / 100e9 * 1e3)              # 6.04 ms
    relu = {"kind": "relu", "op": "fwd+bwd", "n": 1, "c": 1, "h": 1000, "w": 1000,
            "flops": None}
    r = roofline.layer_bound(relu, peaks)
    assert r["limit"] == "memory" and r["bound_ms"] == pytest.approx(20e6 / 10e9 * 1e3)
    model = {"kind": "train", "flops": 31143198720}
    assert roofline.layer_bound(model, peaks)["bound_ms"] == pytest.approx(311.43198720)
    assert roofline.achieved_fraction(6.0, 12.0) == 0.5
    assert roofline.achieved_fraction(6.0, None) is None


def test_peaks_are_the_best_of_every_run():
    def peaks(gemm, bandwidth):
        return {"gemm_gflops": gemm, "bandwidth_gbs": bandwidth, "gemm_method": "g",
                "bandwidth_method": "b"}
    first = roofline.merge_runs(None, dict(MACHINE, date="d1"), peaks(136.0, 10.0))
    assert first["peaks"]["gemm_gflops"] == 136.0 and len(first["runs"]) == 1
    second = roofline.merge_runs(first, dict(MACHINE, date="d2"), peaks(40.0, 19.0))
    assert second["peaks"]["gemm_gflops"] == 136.0
    assert second["peaks"]["bandwidth_gbs"] == 19.0
    assert second["peaks"]["gemm_method"] == "g; best of 2 runs (d1)"
    assert second["peaks"]["bandwidth_method"] == "b; best of 2 runs (d2)"
    other = copy.deepcopy(MACHINE)
    other["cpu_identity"]["model"] = "1"
    with pytest.raises(ValueError, match="another CPU"):
        roofline.merge_runs(second, other, peaks(1.0, 1.0))


def test_roofline_table_on_a_fake_file():
    peaks = {"machine": MACHINE, "peaks": {"gemm_gflops": 100.0, "bandwidth_gbs": 10.0,
                                           "gemm_method": "m", "bandwidth_method": "b"}}
    lines = report.roofline_table(peaks, fake_record())
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    row = dict(zip(head, [c.strip() for c in lines[2].strip("|").split("|")]))
    assert row["MFLOP"] == "604" and row["MB moved"] == "16.8" and row["bound ms"] == "6.04"
    assert row["tinyres % of bound"] == "151%" and row["torch % of bound"] == "75%"
    model = dict(zip(head, [c.strip() for c in lines[3].strip("|").split("|")]))
    assert model["MB moved"] == "-" and model["tinyres % of bound"] == "156%"
    assert model["torch.compile % of bound"] == "-"
    assert "left out" not in " ".join(report.roofline_header(peaks, "p.json", fake_record()))
    other = fake_record()
    other["machine"]["cpu_identity"]["model"] = "1"           # another CPU: no shares
    assert "left out" in " ".join(report.roofline_header(peaks, "p.json", other))
    row = dict(zip(head, [c.strip() for c in report.roofline_table(peaks, other)[2]
                          .strip("|").split("|")]))
    assert row["bound ms"] == "6.04" and row["tinyres % of bound"] == "-"


# ----- callgrind_layer: arguments and parsing ------------------------------------------------
def test_find_case_picks_one_case_at_the_given_batch():
    import cpu_bench
    case = callgrind_layer.find_case(cpu_bench.all_cases(), "r20 conv3x3/s1 16->16",
                                     "fwd+bwd", batch=4)
    assert case["n"] == 4 and case["threads"] == 1 and case["op"] == "fwd+bwd"
    model = callgrind_layer.find_case(cpu_bench.all_cases(), "resnet20 train")
    assert model["n"] == 128
    with pytest.raises(ValueError, match="matched 2"):
        callgrind_layer.find_case(cpu_bench.all_cases(), "r20 conv3x3/s1 16->16")
    with pytest.raises(ValueError, match="matched 0"):
        callgrind_layer.find_case(cpu_bench.all_cases(), "r99")


def test_parse_args_requires_a_case():
    with pytest.raises(SystemExit):
        callgrind_layer.parse_args([])
    with pytest.raises(SystemExit):
        callgrind_layer.parse_args(["--case", "x", "--steps", "0"])
    args = callgrind_layer.parse_args(["--case", "resnet20 train", "--engine", "torch",
                                       "--batch", "2"])
    assert (args.engine, args.batch, args.steps) == ("torch", 2, 1)


def test_region_count_reads_the_triggered_dump(tmp_path):
    final = tmp_path / "callgrind.out"
    final.write_text("desc: Trigger: Program termination\nsummary: 0\ntotals: 7\n")
    dump = tmp_path / "callgrind.out.1"
    dump.write_text("desc: Trigger: Client Request: timed region\nevents: Ir\n"
                    "summary: 0\nfn=(1) f\n1 5\ntotals: 14855679\n")
    assert callgrind_layer.region_count([str(final), str(dump)]) == 14855679
    assert callgrind_layer.region_count([str(final)]) is None


def test_valgrind_starts_with_instrumentation_off():
    cmd = callgrind_layer.valgrind_command("/tmp/out")
    assert "--tool=callgrind" in cmd and "--instr-atstart=no" in cmd


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None or shutil.which("cc") is None
                    or not Path("/usr/include/valgrind/callgrind.h").exists(),
                    reason="needs valgrind, its callgrind.h and a C compiler")
def test_callgrind_counts_a_tiny_numpy_case():
    """A real count (the numpy engine: no Numba compile, about 20 s under valgrind)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "callgrind_layer.py"), "--case",
         "r20 conv3x3/s1 16->16", "--op", "fwd", "--batch", "1", "--engine", "numpy",
         "--no-prime", "--warmup", "1"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    count = int(out.split("instructions per step:")[1].split()[0])
    # 1 image: 2*16*32*32*16*9 = 4.7 MFLOP of GEMM alone; the count is far above zero
    # and below what a scalar loop over every multiply-add would take
    assert 100_000 < count < 200_000_000
