"""The CPU benchmark harness (benchmarks/cpu_bench.py, _timing.py, _process.py): the
workers' environment under each --alloc and --blas-env setting, results-file names, what
a worker reports it ran on, the rows built from results (compile time, errors, first
calls), the goal case set, and one end-to-end run of the harness at toy sizes."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _process  # noqa: E402
import _timing  # noqa: E402
import cpu_bench  # noqa: E402
from tinyres.kernels import conv_plan  # noqa: E402

PARENT_ENV = {"PATH": "/usr/bin", "OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512",
              "OPENBLAS_NUM_THREADS": "2", "MALLOC_ARENA_MAX": "2",
              "MALLOC_MMAP_THRESHOLD_": "1000", "NUMBA_CACHE_DIR": "/tmp/x"}


# ----- the workers' environment -------------------------------------------------------------
def test_default_alloc_leaves_glibc_at_its_defaults():
    env = _process.worker_env(PARENT_ENV, "default", "inherit")
    assert not [k for k in env if k.startswith("MALLOC_")]
    assert env["PATH"] == "/usr/bin" and env["NUMBA_CACHE_DIR"] == "/tmp/x"


def test_tuned_alloc_sets_exactly_the_two_malloc_variables():
    env = _process.worker_env(PARENT_ENV, "tuned", "inherit")
    malloc = {k: v for k, v in env.items() if k.startswith("MALLOC_")}
    assert malloc == {"MALLOC_MMAP_THRESHOLD_": "33554432",
                      "MALLOC_TRIM_THRESHOLD_": "2147483647"}


def test_blas_detection_removes_the_openblas_overrides_only():
    detect = _process.worker_env(PARENT_ENV, "default", "detect")
    assert "OPENBLAS_CORETYPE" not in detect and "OPENBLAS_L2_SIZE" not in detect
    assert detect["OPENBLAS_NUM_THREADS"] == "2"
    inherit = _process.worker_env(PARENT_ENV, "default", "inherit")
    assert inherit["OPENBLAS_CORETYPE"] == "Haswell" and inherit["OPENBLAS_L2_SIZE"] == "512"
    assert _process.removed_blas_variables(PARENT_ENV, "detect") == {
        "OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512"}
    assert _process.removed_blas_variables(PARENT_ENV, "inherit") == {}


NAMES = st.sampled_from(["PATH", "HOME", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                         "OPENBLAS_NUM_THREADS", "MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_",
                         "MALLOC_MMAP_THRESHOLD_", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"])


@given(st.dictionaries(NAMES, st.text("abc0123", min_size=1, max_size=4)),
       st.sampled_from(_process.ALLOC_SETTINGS), st.sampled_from(_process.BLAS_ENV_SETTINGS))
def test_worker_env_changes_only_the_allocator_and_blas_detection_variables(base, alloc, blas):
    env = _process.worker_env(base, alloc, blas)
    touched = set(_process.BLAS_DETECTION_VARIABLES) if blas == "detect" else set()
    for name, value in base.items():
        if not name.startswith("MALLOC_") and name not in touched:
            assert env[name] == value
    assert not touched & set(env)
    malloc = {k: v for k, v in env.items() if k.startswith("MALLOC_")}
    assert malloc == (_process.MALLOC_TUNED if alloc == "tuned" else {})


def test_worker_env_leaves_the_parent_env_alone_and_rejects_unknown_settings():
    before = dict(PARENT_ENV)
    _process.worker_env(PARENT_ENV, "tuned", "detect")
    assert PARENT_ENV == before
    with pytest.raises(ValueError, match="alloc"):
        _process.worker_env(PARENT_ENV, "fast", "detect")
    with pytest.raises(ValueError, match="blas_env"):
        _process.worker_env(PARENT_ENV, "tuned", "haswell")


@pytest.mark.parametrize("blas_env", _process.BLAS_ENV_SETTINGS)
def test_a_script_reruns_itself_without_the_openblas_overrides_under_detect(tmp_path,
                                                                            blas_env):
    # the scripts that run their work in their own process (roofline.py, policy_ab.py,
    # winograd_gemm.py) start again without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, their
    # arguments kept; with inherit they go on as they are
    script = tmp_path / "script.py"
    script.write_text(f"import os, sys\nsys.path.insert(0, {str(BENCH)!r})\n"
                      "import _process\n"
                      "_process.rerun_without_blas_variables(sys.argv[1], __file__, "
                      "sys.argv[1:])\n"
                      "print(sys.argv[1:], os.environ.get('OPENBLAS_CORETYPE'), "
                      "os.environ.get('OPENBLAS_L2_SIZE'), os.environ.get('KEPT'))\n")
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell", OPENBLAS_L2_SIZE="512", KEPT="yes")
    out = subprocess.run([sys.executable, str(script), blas_env, "--x", "1"], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    pinned = ["None", "None"] if blas_env == "detect" else ["Haswell", "512"]
    assert out == [f"['{blas_env}',", "'--x',", "'1']"] + pinned + ["yes"]
    with pytest.raises(ValueError, match="blas_env"):
        _process.rerun_without_blas_variables("haswell", str(script), [])


def test_every_engine_gets_the_same_environment_but_compile_its_own_cache():
    env = _process.worker_env(PARENT_ENV, "tuned", "detect")
    with cpu_bench.engine_envs(["tinyres", "torch", "torch_compile"], env) as envs:
        cache = envs["torch_compile"].pop("TORCHINDUCTOR_CACHE_DIR")
        assert os.path.isdir(cache) and not os.listdir(cache)
        assert envs["tinyres"] == envs["torch"] == envs["torch_compile"] == env
    assert not os.path.exists(cache)


def test_settings_lines_say_what_the_workers_got():
    text = "\n".join(_process.settings_lines(("default", "tuned"), "detect",
                                             {"OPENBLAS_CORETYPE": "Haswell"}, 2, False))
    assert "MALLOC_MMAP_THRESHOLD_=33554432" in text and "OPENBLAS_CORETYPE=Haswell" in text
    assert "tune()" not in text
    assert "tune()" in "\n".join(_process.settings_lines(("tuned",), "inherit", {}, 2, True))
    assert "buffer cache" not in text
    assert "buffers.enable(False)" in "\n".join(
        _process.settings_lines(("default",), "detect", {}, 2, False, False))


# ----- results files ------------------------------------------------------------------------
def test_results_files_are_named_by_cpu_family_model_and_commit():
    info = {"cpu_identity": {"cpu family": "25", "model": "1"}, "commit": "b33f595"}
    path = pathlib.Path(_timing.results_path(info))
    assert path.name == "cpu_f25m1_b33f595.json"
    assert path.parent == BENCH / "results"
    assert pathlib.Path(_timing.results_path(info, "goals")).name == "cpu_f25m1_b33f595_goals.json"
    assert pathlib.Path(_timing.results_path({}, None, "/r")) == \
        pathlib.Path("/r/cpu_funknownmunknown_unknown.json")


def test_automatic_suffix_names_what_differs_from_a_full_default_run():
    assert cpu_bench.auto_suffix("all", None, ("default", "tuned"), "detect", False) is None
    assert cpu_bench.auto_suffix("goals", None, ("default", "tuned"), "detect", False) == "goals"
    assert cpu_bench.auto_suffix("quick", "r20", ("tuned",), "inherit", True, "x") == \
        "quick_sel_tuned_blasinherit_tune_x"
    assert cpu_bench.auto_suffix("goals", None, ("default",), "detect", False, None,
                                 False) == "goals_default_nocache"


# ----- what a worker ran on -----------------------------------------------------------------
TORCH_CONFIG = """PyTorch built with:
  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R)
  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71049cd69a3df32adcccb623b12cd7baa22)
  - CPU capability usage: AVX512
  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release, LAPACK_INFO=mkl,
"""


def test_torch_build_summary_is_the_short_form_of_its_config():
    assert _process.torch_build_summary(TORCH_CONFIG) == {
        "blas": "mkl", "mkl": "2024.2", "onednn": "v3.12.0", "cpu_capability": "AVX512"}
    assert _process.torch_build_summary("BLAS_INFO=open") == {"blas": "open"}


def test_worker_info_reports_blas_numba_torch_and_environment():
    torch = pytest.importorskip("torch")
    import tinyres
    import tinyres.nn.functional as F
    x = tinyres.tensor(np.ones((1, 4, 6, 6), np.float32))
    F.conv2d(x, tinyres.tensor(np.ones((4, 4, 3, 3), np.float32)))   # a Numba parallel call
    info = _process.worker_info("tinyres", 2)
    assert set(info) == {"engine", "pid", "threads_requested", "blas", "openmp", "numba",
                         "torch", "env"}
    assert info["engine"] == "tinyres" and info["pid"] == os.getpid()
    assert info["blas"] and all(set(lib) == {"internal_api", "version", "architecture",
                                             "num_threads", "filepath"}
                                for lib in info["blas"])
    assert info["numba"]["num_threads"] >= 1
    assert info["numba"]["threading_layer"] in ("tbb", "omp", "workqueue")
    import llvmlite.binding as llvm
    host_avx512 = bool(llvm.get_host_cpu_features().get("avx512f"))
    assert info["numba"]["target"] == {"cpu_name": llvm.get_host_cpu_name(),
                                       "avx512": host_avx512,
                                       "avx2": bool(llvm.get_host_cpu_features().get("avx2"))}
    assert info["torch"]["num_threads"] == torch.get_num_threads()
    assert info["torch"]["mkldnn"] == torch.backends.mkldnn.is_available()
    assert "blas" in info["torch"]["build"]
    assert set(info["env"]) == {"malloc", "openblas", "openmp", "numba", "torch"}
    line = _process.summary_line("tinyres", info)
    assert line.startswith("tinyres: ") and "Numba" in line and "malloc" in line


def test_summary_line_shows_the_kernel_and_the_allocator():
    info = {"torch": None, "numba": {"threading_layer": "tbb", "num_threads": 2},
            "blas": [{"internal_api": "openblas", "version": "0.3.30",
                      "architecture": "SkylakeX", "num_threads": 2, "filepath": "x"}],
            "openmp": [], "env": {"malloc": dict(_process.MALLOC_TUNED),
                                  "openblas": {"OPENBLAS_CORETYPE": "Haswell"}}}
    line = _process.summary_line("tinyres", info)
    assert "openblas 0.3.30 SkylakeX x2" in line and "tbb x2" in line
    assert "MALLOC_TRIM_THRESHOLD_=2147483647" in line and "OPENBLAS_CORETYPE=Haswell" in line
    assert "not measured" in _process.summary_line("torch", None)


def test_numba_target_follows_the_pinned_cpu_and_names_avx512(monkeypatch):
    from numba.core import config
    monkeypatch.setattr(config, "CPU_NAME", "skylake-avx512")
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx2,+avx512f,-amx-tile")
    target = _process.numba_target()
    assert target == {"cpu_name": "skylake-avx512", "avx512": True, "avx2": True}
    assert _process.target_text(target) == " skylake-avx512 AVX-512"
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx2,-avx512f")
    assert _process.target_text(_process.numba_target()).endswith("AVX2")
    info = {"torch": None, "numba": {"threading_layer": "tbb", "num_threads": 2,
                                     "target": target},
            "blas": [], "openmp": [], "env": {"malloc": {}, "openblas": {}}}
    assert "Numba tbb x2 skylake-avx512 AVX-512" in _process.summary_line("tinyres", info)


def test_simd_summary_names_avx512_and_amx():
    assert _timing.simd_summary(["avx2", "avx512f", "amx_tile"]) == \
        "AVX-512: yes, avx512f; AMX: yes, amx_tile"
    assert _timing.simd_summary(["avx2", "fma"]) == "AVX-512: no; AMX: no"


# ----- rows from results --------------------------------------------------------------------
CASE = {"name": "resnet20 train step batch 128", "kind": "train", "flops": 4e9}


def test_warm_row_has_both_ratios_compile_time_and_memory_ratio():
    res = {"tinyres": {"ms": 100.0, "peak_rss_mb": 240.0},
           "torch": {"ms": 200.0, "peak_rss_mb": 300.0},
           "torch_compile": {"ms": 160.0, "peak_rss_mb": 900.0, "first_call_ms": 38000.0}}
    engines = ["tinyres", "torch", "torch_compile"]
    row, record = cpu_bench.warm_row(CASE, res, engines, "tuned")
    columns = [t for t, _ in cpu_bench.warm_columns([CASE], engines)]
    cells = dict(zip(columns, row))
    assert cells["tinyres ms"] == "100.00" and cells["compile ms"] == "160.00"
    assert cells["ratio"] == "0.50" and cells["/compile"] == "0.62"
    assert cells["compile s"] == "38.0" and cells["MB ratio"] == "0.80"
    assert cells["tinyres GF/s"] == "40.0" and cells["torch GF/s"] == "20.0"
    assert record["alloc"] == "tuned" and record["measure"] == "warm"
    assert record["ratio_tinyres_torch"] == 0.5 and record["compile_s"] == 38.0
    assert record["memory_ratio_tinyres_torch"] == pytest.approx(0.8)
    assert "gflops" not in res["tinyres"]            # the caller's results are not changed


def test_a_failed_compile_is_an_error_in_its_row_not_a_crash():
    res = {"tinyres": {"ms": 100.0, "peak_rss_mb": 1.0}, "torch": {"ms": 50.0, "peak_rss_mb": 2.0},
           "torch_compile": {"error": "InductorError: CppCompileError: C++ compile error"}}
    engines = ["tinyres", "torch", "torch_compile"]
    row, record = cpu_bench.warm_row(CASE, res, engines, "default")
    assert row[3] == "error" and record["ratio_tinyres_compile"] is None
    assert record["compile_s"] is None and record["ratio_tinyres_torch"] == 2.0
    assert cpu_bench.error_lines(record["results"]) == [
        "    compile: error: InductorError: CppCompileError: C++ compile error"]
    layer = dict(CASE, kind="conv")
    row, _ = cpu_bench.warm_row(layer, {"tinyres": res["tinyres"], "torch": res["torch"]},
                                engines, "default")
    assert row[3] == "-"                              # not run on a layer case: no error


def test_error_reason_is_the_exception_line_not_the_hint_after_it():
    trace = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
             "torch._inductor.exc.InductorError: InvalidCxxCompiler: No working C++ "
             "compiler found\n\nSet TORCHDYNAMO_VERBOSE=1 for the internal stack trace\n")
    assert _timing.error_reason(trace) == ("torch._inductor.exc.InductorError: "
                                           "InvalidCxxCompiler: No working C++ compiler found")
    assert _timing.error_reason("worker exited with code -9") == "worker exited with code -9"


def test_first_calls_row_splits_the_first_call_from_the_later_ones():
    res = {"tinyres": {"calls_ms": [2000.0, 60.0, 40.0]},
           "torch": {"calls_ms": [400.0, 100.0, 80.0]},
           "torch_compile": {"calls_ms": [30000.0, 50.0, 50.0]}}
    engines = ["tinyres", "torch", "torch_compile"]
    row, record = cpu_bench.first_calls_row(CASE, res, engines, "default")
    columns = [t for t, _ in cpu_bench.first_calls_columns([CASE], engines)]
    cells = dict(zip(columns, row))
    assert cells["tinyres 1st ms"] == "2000.00" and cells["compile 1st ms"] == "30000.00"
    assert cells["tinyres later ms"] == "50.00" and cells["torch later ms"] == "90.00"
    assert cells["ratio 1st"] == "5.00" and record["ratio_later_calls_tinyres_torch"] == \
        pytest.approx(50 / 90)
    assert record["measure"] == "first_calls"
    one = cpu_bench.first_calls_row(CASE, {"tinyres": {"calls_ms": [5.0]}}, ["tinyres"], "x")
    assert one[1]["results"]["tinyres"]["later_ms"] is None


def test_inference_workers_warm_up_more_and_compile_skips_the_tiny_warmup():
    class Opts:
        reps, warmup, first_calls, infer_warmup = 3, 1, 3, 5
    infer = dict(CASE, kind="infer")
    assert cpu_bench.worker_spec("torch", infer, Opts, "warm")["prewarm"] == 5
    assert cpu_bench.worker_spec("torch", CASE, Opts, "warm")["prewarm"] == 0
    assert cpu_bench.worker_spec("tinyres", infer, Opts, "warm")["tiny_warmup"]
    assert not cpu_bench.worker_spec("torch_compile", infer, Opts, "warm")["tiny_warmup"]


# ----- case sets ----------------------------------------------------------------------------
def test_goals_are_the_model_cases_and_the_listed_convolutions():
    names = [c["name"] for c in cpu_bench.goals_cases()]
    assert names[:5] == ["resnet20 train step batch 128", "resnet20 infer step batch 128",
                         "resnet20 infer folded step batch 128",
                         "resnet18 train step batch 16", "resnet18 infer step batch 16"]
    assert [c.get("fold", False) for c in cpu_bench.goals_cases()[:5]] == [
        False, False, True, False, False]
    convs = [c for c in cpu_bench.goals_cases() if c["kind"] == "conv"]
    assert all(c["op"] == "fwd+bwd" for c in convs) and len(convs) == 5 + 8
    r18 = {(c["k"], c["stride"], c["h"]) for c in convs if c["n"] == 16}
    assert r18 == {(7, 2, 224), (3, 1, 56), (3, 1, 28), (3, 1, 14), (3, 1, 7),
                   (1, 2, 56), (1, 2, 28), (1, 2, 14)}


def test_small_batches_are_resnet20s_step_and_inference_at_8_and_32():
    names = [c["name"] for c in cpu_bench.small_batch_cases()]
    assert names == ["resnet20 train step batch 8", "resnet20 infer step batch 8",
                     "resnet20 train step batch 32", "resnet20 infer step batch 32"]
    case_set, engines, _ = cpu_bench.resolve(*cpu_bench.parse_args(["--small"]))
    assert case_set == "small" and engines == ["tinyres", "torch"]


def test_model_flops_at_the_default_size_are_unchanged_and_scale_with_size():
    assert cpu_bench.model_forward_flops("resnet18", 1) == pytest.approx(3.64e9, rel=0.01)
    assert cpu_bench.model_convs("resnet20", 2, 32) == cpu_bench.model_convs("resnet20", 2)
    small = cpu_bench.model_forward_flops("resnet20", 1, 16) - 2 * 64 * 10
    assert small * 4 == cpu_bench.model_forward_flops("resnet20", 1) - 2 * 64 * 10


# ----- one run of the harness, toy sizes ----------------------------------------------------
def test_a_tiny_run_measures_both_engines_under_the_same_settings(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "tiny.json"
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell", MALLOC_ARENA_MAX="2")
    done = subprocess.run([sys.executable, str(BENCH / "cpu_bench.py"), "--tiny",
                           "--alloc", "tuned", "--json", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    settings = record["settings"]
    assert settings["alloc"] == ["tuned"] and settings["blas_env"] == "detect"
    assert settings["blas_env_removed"] == {                 # and the L2 size, where set
        k: env[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in env}
    assert settings["blas_env_removed"]["OPENBLAS_CORETYPE"] == "Haswell"
    assert [r["case"]["kind"] for r in record["rows"]] == ["infer", "conv"]
    for row in record["rows"] + record["first_calls"]:
        for engine in ("tinyres", "torch"):
            result = row["results"][engine]
            assert "error" not in result, result
            worker = result["worker"]
            assert worker["env"]["malloc"] == _process.MALLOC_TUNED
            assert "OPENBLAS_CORETYPE" not in worker["env"]["openblas"]
            assert worker["threads_requested"] == os.cpu_count()
        assert row["results"]["tinyres"]["worker"]["numba"]["threading_layer"] != \
            "none (no parallel call yet)"
        assert row["results"]["torch"]["worker"]["torch"]["num_threads"] == os.cpu_count()
    warm = record["rows"][0]["results"]
    assert warm["tinyres"]["ms"] > 0 and warm["torch"]["first_call_ms"] > 0
    assert record["rows"][0]["ratio_tinyres_torch"] == warm["tinyres"]["ms"] / warm["torch"]["ms"]
    first = record["first_calls"][0]
    assert first["case"]["kind"] == "infer"
    assert all(len(first["results"][e]["calls_ms"]) == 2 for e in ("tinyres", "torch"))
    assert set(record["engines_info"]["tuned"]) == {"tinyres", "torch"}
    assert "  tinyres: " in done.stdout and "First calls, allocator tuned" in done.stdout


def test_policy_ab_runs_both_policies_in_turns_and_says_what_each_picked(tmp_path):
    out = tmp_path / "ab.json"
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell")
    done = subprocess.run([sys.executable, str(BENCH / "policy_ab.py"), "--tiny",
                           "--a", "winograd_min_channels=1", "--b", "", "--rounds", "3",
                           "--warmup", "1", "--json", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["settings"]["a"] == {"winograd_min_channels": 1}
    assert record["settings"]["b"] == {} and record["settings"]["blas_env"] == "detect"
    assert record["machine"]["blas"]["environment"] == {}     # removed, as cpu_bench.py does
    infer, conv = record["rows"]
    for row in (infer, conv):
        assert len(row["ms_a"]) == len(row["ms_b"]) == 3
        assert row["median_a"] > 0 and row["median_b"] > 0
    assert infer["plan_a"] is None
    # the toy layer has 4 channels: Winograd only where A lowers its channel threshold
    assert "winograd" not in conv["plan_b"]
    threads = conv_plan.scipy_blas() is not None
    assert conv["plan_a"].startswith("winograd-lanes/") == threads


def test_policy_ab_refuses_a_field_the_policy_does_not_have():
    done = subprocess.run([sys.executable, str(BENCH / "policy_ab.py"), "--tiny",
                           "--a", "winograd_lanes=8"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "expected field=value with a field of ConvPolicy" in done.stderr
    assert "'winograd_lanes=8'" in done.stderr
