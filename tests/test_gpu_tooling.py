"""The GPU tooling, checked without a GPU.

- The `pytest -m gpu` decision (tinyres/gpu_probe.py) on stand-in drivers and stacks:
  skip only when the GPU is explicitly absent, fail when it is there and broken; and the
  hook in tests/conftest.py that applies it to `gpu` tests only.
- The launchers' device check (kernels/cuda.py) with stand-in arrays that report a device.
- The on-disk kernel cache (kernels/cuda_build.py): the key follows the source, the
  options, the architecture and the versions; a second build does not compile; a real
  NVRTC compile (skipped without NVRTC) gives a cubin and the mangled names, which the
  launchers' loader (a stand-in device and RawModule) takes from disk the second time.
- Denormals: the GPU build keeps them (no .ftz in the PTX, where -ftz=true puts it), and
  the emulated ReLU gradient at a denormal input equals the reference's and PyTorch's,
  while an emulator that flushes them (the negative control) does not.
- benchmarks/gpu_model.py's arithmetic on one layer by hand; python -m tinyres.gpu_check
  without a GPU (a clear message, exit 2) and its JSON assembly with stand-in steps;
  benchmarks/conv_bench.py's output check and its --help.
"""
import ctypes
import functools
import json
import os
import pathlib
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from tinyres import gpu_probe
from tinyres.kernels import cuda, cuda_build, emulate
from tinyres.kernels import reference as ref


# ----------------------------------------------------------------- the -m gpu decision
class FakeDriver:
    """Stands in for libcuda: cuInit returns init_rc, the device count is `count`."""

    def __init__(self, init_rc=0, count=1, count_rc=0):
        self.init_rc, self.count, self.count_rc = init_rc, count, count_rc

    def cuInit(self, flags):
        return self.init_rc

    def cuDeviceGetCount(self, ref_count):
        ctypes.cast(ref_count, ctypes.POINTER(ctypes.c_int)).contents.value = self.count
        return self.count_rc


def _loader(driver):
    def load(name):
        assert name == gpu_probe.DRIVER_LIBRARY
        if driver is None:
            raise OSError(f"{name}: cannot open shared object file")
        return driver
    return load


@pytest.mark.parametrize("driver,state", [
    (None, "absent"),
    (FakeDriver(init_rc=gpu_probe.CUDA_ERROR_STUB_LIBRARY), "absent"),
    (FakeDriver(init_rc=gpu_probe.CUDA_ERROR_NO_DEVICE), "absent"),
    (FakeDriver(count=0), "absent"),
    (FakeDriver(init_rc=999), "broken"),
    (FakeDriver(count_rc=3), "broken"),
    (FakeDriver(count=2), "present"),
])
def test_driver_status_on_stand_in_drivers(driver, state):
    got, detail = gpu_probe.driver_status(load=_loader(driver))
    assert got == state
    assert detail == 2 if state == "present" else isinstance(detail, str) and detail


def test_an_absent_gpu_skips_and_never_asks_cupy():
    def stack():
        raise AssertionError("CuPy must not be probed without a driver")
    action, reason = gpu_probe.gpu_verdict(lambda: ("absent", "no NVIDIA driver"), stack)
    assert (action, reason) == ("skip", "no NVIDIA driver")


@pytest.mark.parametrize("problem", ["CUDA needs CuPy: install it",
                                     "CUDA is not usable: CompileException: nvrtc missing",
                                     "CUDA is not usable: CUBLASError: not initialised"])
def test_a_broken_stack_on_a_present_gpu_fails_with_the_reason(problem):
    action, reason = gpu_probe.gpu_verdict(lambda: ("present", 1), lambda: problem)
    assert action == "fail" and problem in reason and "1 CUDA device" in reason


def test_a_broken_driver_fails_and_a_working_stack_runs():
    assert gpu_probe.gpu_verdict(lambda: ("broken", "cuInit failed"), lambda: None) == \
        ("fail", "cuInit failed")
    assert gpu_probe.gpu_verdict(lambda: ("present", 8), lambda: None) == ("run", None)


def test_this_machine_without_a_driver_skips():
    state, _ = gpu_probe.driver_status()
    if state != "absent":
        pytest.skip("this machine has an NVIDIA driver")
    assert gpu_probe.gpu_verdict()[0] == "skip"


class FakeItem:
    """A collected test, as far as the gpu hook looks at it."""

    def __init__(self, gpu):
        self.gpu = gpu

    def get_closest_marker(self, name):
        return object() if name == "gpu" and self.gpu else None


@pytest.mark.parametrize("verdict,outcome", [(("skip", "no driver"), pytest.skip.Exception),
                                             (("fail", "CuPy broken"), pytest.fail.Exception)])
def test_the_gpu_hook_skips_or_fails_gpu_tests_only(monkeypatch, verdict, outcome):
    import conftest
    monkeypatch.setattr(conftest, "_gpu_verdict", lambda: verdict)
    with pytest.raises(outcome, match=verdict[1]):
        conftest.pytest_runtest_setup(FakeItem(gpu=True))
    assert conftest.pytest_runtest_setup(FakeItem(gpu=False)) is None
    monkeypatch.setattr(conftest, "_gpu_verdict", lambda: ("run", None))
    assert conftest.pytest_runtest_setup(FakeItem(gpu=True)) is None


# ------------------------------------------------------------- launchers check devices
class OnDevice(np.ndarray):
    """A NumPy array that says which GPU it is on (attribute gpu)."""


def on(gpu, a):
    out = np.ascontiguousarray(a).view(OnDevice)
    out.gpu = gpu
    return out


def _launchers(current, launched, plain=None):
    """Launchers whose kernels only record their names; an array's device is its `gpu`
    attribute, `plain` for a plain NumPy array (None: on the host; `current`: made by the
    array module on the current device, as CuPy's intermediates are)."""
    def kernel(name, dtype):
        return lambda grid, block, args: launched.append(name)
    return cuda.Launchers(np, kernel, devices=(lambda a: getattr(a, "gpu", plain),
                                               lambda: current))


def _calls(x, g, v, idx, cols):
    """Every launcher with its arrays: (kernel, {argument name: array}, call)."""
    w2 = on(x.gpu, np.ones((2, x.shape[1] * 4), np.float32))
    return [
        ("im2col", lambda L: L.im2col(x, 2, 2, 1, 1, 0, 0)),
        ("col2im", lambda L: L.col2im(cols, x.shape, 2, 2, 1, 1, 0, 0)),
        ("conv2d_forward", lambda L: L.conv2d_forward(x, w2, 2, 2, 1, 1, 0, 0)),
        ("conv2d_backward", lambda L: L.conv2d_backward(g, x, w2, 2, 2, 1, 1, 0, 0)),
        ("batchnorm_forward", lambda L: L.batchnorm_forward(x, v, v, None, None, 0.1, 1e-5)),
        ("batchnorm_backward", lambda L: L.batchnorm_backward(x, x, v, v, v)),
        ("relu_forward", lambda L: L.relu_forward(x)),
        ("relu_backward", lambda L: L.relu_backward(x, x)),
        ("maxpool_forward", lambda L: L.maxpool_forward(x, 2, 2, 1, 1, 0, 0)),
        ("maxpool_backward", lambda L: L.maxpool_backward(g, idx, x.shape, 2, 2, 1, 1, 0, 0)),
    ]


def _arrays(gpu):
    x = on(gpu, np.ones((2, 3, 4, 4), np.float32))
    g = on(gpu, np.ones((2, 2, 3, 3), np.float32))
    gp = on(gpu, np.ones((2, 3, 3, 3), np.float32))
    idx = on(gpu, np.zeros((2, 3, 3, 3), np.int64))
    cols = on(gpu, np.ones((12, 18), np.float32))
    return x, g, gp, idx, cols, on(gpu, np.ones(3, np.float32))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # no real kernels
@pytest.mark.parametrize("i", range(10))
def test_every_launcher_names_kernel_array_and_both_devices(i):
    x, g, gp, idx, cols, v = _arrays(1)
    calls = _calls(x, g if i == 3 else gp, v, idx, cols)
    kernel, call = calls[i]
    launched = []
    with pytest.raises(RuntimeError, match=rf"^{kernel}: array \w+ is on cuda:1 but the kernel "
                                           r"runs on the current device cuda:0"):
        call(_launchers(0, launched))
    assert launched == []                         # refused before any launch
    call(_launchers(1, launched, plain=1))        # the same call on the current device runs
    assert launched


def test_a_host_array_and_one_stray_array_are_named():
    x = on(0, np.ones((2, 3, 4, 4), np.float32))
    weight = np.ones(3, np.float32)               # no device: a host array
    with pytest.raises(RuntimeError, match=r"batchnorm_forward: array weight is on cpu"):
        _launchers(0, []).batchnorm_forward(x, weight, on(0, weight), None, None, 0.1, 1e-5)
    with pytest.raises(RuntimeError, match=r"relu_backward: array x is on cuda:2 .* cuda:0"):
        _launchers(0, []).relu_backward(on(0, x), on(2, x))


# ----------------------------------------------------------------- the kernel cache
def _counting_compiler(log):
    def compile(source, filename, options, arch, kind, names):
        log.append((source, options, arch))
        return b"\x7fELF fake " + source.encode(), {n: f"_Z{len(n)}{n}" for n in names}
    return compile


def test_cache_key_follows_every_input():
    base = ("src", ("-std=c++17",), "-arch=sm_90", ["k<float>"], ("13.0", "14.2.0"))
    key = cuda_build.cache_key(*base)
    for i, changed in enumerate(["src2", ("-std=c++17", "-ftz=true"), "-arch=sm_80",
                                 ["k<double>"], ("13.1", "14.2.0")]):
        args = list(base)
        args[i] = changed
        assert cuda_build.cache_key(*args) != key, i
    assert cuda_build.cache_key(*base) == key


def test_second_build_loads_from_disk_without_compiling(tmp_path):
    log = []
    args = ("k.cu", "-arch=sm_90", "cubin", ["k<float>", "k<double>"], ("13.0", "14.2.0"))
    first = cuda_build.build("src", *args, directory=tmp_path, compile=_counting_compiler(log))
    again = cuda_build.build("src", *args, directory=tmp_path, compile=_counting_compiler(log))
    assert first.compiled and not again.compiled and len(log) == 1
    assert again.path == first.path and again.lowered == first.lowered
    assert again.path.read_bytes().startswith(b"\x7fELF")
    changed = cuda_build.build("src2", *args, directory=tmp_path,
                               compile=_counting_compiler(log))
    assert changed.compiled and changed.path != first.path and len(log) == 2


def test_cache_lives_under_cupys_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path))
    assert cuda_build.cache_dir() == tmp_path / "tinyres"
    monkeypatch.delenv("CUPY_CACHE_DIR")
    assert str(cuda_build.cache_dir()).endswith(".cupy/kernel_cache/tinyres")


def test_target_picks_a_cubin_or_falls_back_to_ptx():
    assert cuda_build.target("90", {80, 90}) == ("-arch=sm_90", "cubin")
    assert cuda_build.target("95", {80, 90}) == ("-arch=compute_90", "ptx")
    with pytest.raises(RuntimeError, match="none of which"):
        cuda_build.target("70", {80, 90})


def _nvrtc():
    try:
        from cupy.cuda import nvrtc
        nvrtc.getVersion()
    except Exception as e:  # no CuPy, or CuPy without an NVRTC library
        pytest.skip(f"NVRTC unavailable ({type(e).__name__}: {e})")
    return nvrtc


def test_nvrtc_build_of_a_real_source_is_cached(tmp_path):
    _nvrtc()
    source = cuda.read_source("relu.cu")
    names = cuda.name_expressions(source)
    log = []

    def compile(*args):
        log.append(args[3])
        return cuda_build.nvrtc_compile(*args)
    built = [cuda_build.build(source, "relu.cu", "-arch=sm_90", "cubin", names, ("v",),
                              directory=tmp_path, compile=compile) for _ in range(2)]
    assert [b.compiled for b in built] == [True, False] and log == ["-arch=sm_90"]
    assert built[0].path.read_bytes()[:4] == b"\x7fELF"
    assert sorted(built[1].lowered) == sorted(names)
    assert all(m.startswith("_Z") and "relu" in m for m in built[1].lowered.values())


def test_gpu_loader_compiles_once_and_loads_the_cubin_by_mangled_name(tmp_path, monkeypatch):
    _nvrtc()
    cupy = pytest.importorskip("cupy")
    loaded = []

    class Device:                           # a compute capability 9.0 GPU, number 0
        def __init__(self, i=0):
            self.id, self.compute_capability = i, "90"

    class RawModule:
        def __init__(self, path):
            loaded.append(path)
            self.path = path

        def get_function(self, name):
            return name
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cupy.cuda, "Device", Device)
    monkeypatch.setattr(cupy, "RawModule", RawModule)
    module, lowered = cuda._module.__wrapped__("relu.cu", 0)
    cubin = pathlib.Path(module.path)
    assert cubin.parent == tmp_path / "tinyres" and cubin.read_bytes()[:4] == b"\x7fELF"
    stamp = cubin.stat().st_mtime_ns
    again, _ = cuda._module.__wrapped__("relu.cu", 0)        # a new process: from disk
    assert again.path == module.path and cubin.stat().st_mtime_ns == stamp
    monkeypatch.setattr(cuda, "_module", lambda f, d: (module, lowered))
    assert cuda._cupy_kernel("relu_backward", np.float64) == lowered["relu_backward<double>"]
    assert lowered["relu_backward<double>"].startswith("_Z13relu_backwardIdE")


# ------------------------------------------------------------------------ denormals
def test_gpu_options_keep_denormals_and_never_fast_math():
    assert "-ftz=false" in cuda_build.OPTIONS
    assert not any("fast" in o or o == "-ftz=true" for o in cuda_build.OPTIONS)


@pytest.mark.parametrize("options,flushes", [(cuda_build.OPTIONS, False),
                                             (("-std=c++17", "-ftz=true"), True)])
def test_ptx_has_ftz_instructions_only_under_ftz_true(options, flushes):
    _nvrtc()
    source = cuda.read_source("relu.cu")
    ptx, _ = cuda_build.nvrtc_compile(source, "relu.cu", options, "-arch=compute_90", "ptx",
                                      cuda.name_expressions(source))
    assert (".ftz." in ptx.decode()) == flushes


def _emulated(ftz):
    try:
        return emulate.backend(ftz=ftz, block=64, max_blocks=8)
    except emulate.EmulatorUnavailable as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("dtype,tiny", [(np.float32, 1e-40), (np.float64, 1e-310)])
def test_emulated_relu_at_a_denormal_equals_the_reference_and_torch(dtype, tiny):
    torch = pytest.importorskip("torch")
    x = np.array([tiny, -tiny, 0.0, 2.0, tiny * 3], dtype)
    assert 0 < abs(x[0]) < np.finfo(dtype).tiny                # really a denormal
    g = np.full(x.shape, 3.0, dtype)
    emu = _emulated(ftz=False)
    grad = emu.relu_backward(g, x)
    np.testing.assert_array_equal(grad, ref.relu_backward(g, x))
    np.testing.assert_array_equal(emu.relu_forward(x), ref.relu_forward(x))
    xt = torch.tensor(x, requires_grad=True)
    torch.relu(xt).backward(torch.tensor(g))
    np.testing.assert_array_equal(grad, xt.grad.numpy())
    assert grad[0] == 3.0 and grad[1] == 0.0


def test_a_flushing_emulator_gets_the_denormal_gradient_wrong():
    try:                                    # relu.cu alone, built as -ftz=true would run it
        module = emulate.EmulatedModule(cuda.read_source("relu.cu"), "relu.cu", ftz=True)
    except emulate.EmulatorUnavailable as e:
        pytest.skip(str(e))
    flushing = cuda.Launchers(np, lambda name, dtype: module.get_function(
        f"{name}<{cuda.C_TYPES[np.dtype(dtype)]}>"), block=64, max_blocks=8)
    x = np.array([1e-40, 1.0], np.float32)
    g = np.ones(2, np.float32)
    flushed = flushing.relu_backward(g, x)
    assert flushed[0] == 0.0 and ref.relu_backward(g, x)[0] == 1.0


# --------------------------------------------------- the roofline model (benchmarks/gpu_model.py)
def _benchmark(name):
    import importlib
    folder = str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def test_gpu_model_one_layer_by_hand():
    model = _benchmark("gpu_model")
    rows = {r["kernel"]: r for r in model.step_items() if r["layer"] == "layer1.0.conv2"}
    # 3x3, 64 -> 64 channels, 56x56, stride 1, batch 64: K = 576, P = 64*56*56 = 200704
    k, p, x = 64 * 9, 64 * 56 * 56, 64 * 64 * 56 * 56
    assert rows["fwd im2col"]["bytes"] == 4 * (x + k * p) == 513_802_240
    gemm = rows["fwd GEMM w2 @ cols"]
    assert gemm["flops"] == 2 * 64 * k * p == 14_797_504_512
    assert gemm["bytes"] == 4 * (64 * k + k * p + 64 * p)
    assert rows["bwd col2im"]["bytes"] == rows["fwd im2col"]["bytes"]
    h100 = model.GPUS["H100 SXM"]
    (fwd, im2col) = (next(r for r in model.predict(model.step_items(), h100)
                          if r["layer"] == "layer1.0.conv2" and r["kernel"] == name)
                     for name in ("fwd GEMM w2 @ cols", "fwd im2col"))
    assert fwd["bound"] == "compute" and fwd["ms"] == pytest.approx(14.7975e9 / 67e12 * 1e3)
    assert im2col["bound"] == "memory" and im2col["ms"] == pytest.approx(
        513_802_240 / 3.35e12 * 1e3)
    tf32 = next(r for r in model.predict(model.step_items(), h100, tf32=True)
                if r["layer"] == "layer1.0.conv2" and r["kernel"] == "fwd GEMM w2 @ cols")
    # on TF32 tensor cores the same GEMM is bound by reading its 462 MB of columns
    assert tf32["bound"] == "memory" and tf32["ms"] == pytest.approx(
        gemm["bytes"] / 3.35e12 * 1e3) and tf32["ms"] < fwd["ms"]


def test_gpu_model_totals_are_consistent():
    model = _benchmark("gpu_model")
    convs = model.resnet50_convs()
    assert len(convs) == 53 and convs[-1][1]["h"] == 7
    scalars, tensors = model.parameter_count()
    assert 25_500_000 < scalars < 25_600_000 and tensors == 161   # torchvision: 25,557,032
    rows = model.predict(model.step_items(), model.GPUS["H200"])
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    s = model.summary(rows)
    assert s["launches"] == sum(r["launches"] for r in rows) > 1000
    assert s["step_ms"] >= s["gpu_ms"] > 0
    faster = model.summary(model.predict(model.step_items(), model.GPUS["H200"], tf32=True))
    assert faster["gpu_ms"] < s["gpu_ms"]


# ------------------------------------------------- python -m tinyres.gpu_check, no GPU needed
def test_gpu_check_without_a_gpu_says_so_and_exits_non_zero(tmp_path, capsys):
    from tinyres import gpu_check
    out = tmp_path / "check.json"
    status = gpu_check.check(out, verdict=lambda: ("skip", "no NVIDIA driver (test)"))
    assert status == 2
    assert "no GPU here: no NVIDIA driver (test)" in capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["verdict"] == "skip" and doc["ok"] is False and doc["steps"] == {}
    assert doc["versions"]["numpy"] == np.__version__ and doc["commit"]


def test_gpu_check_on_a_gpu_runs_every_step_and_gathers_one_json(tmp_path, monkeypatch):
    from tinyres import gpu_check
    ran, envs = [], []

    def fake_step(cmd, timeout, runner=None, log=None, env=None):
        ran.append(cmd)
        envs.append(env)
        if "--json" in cmd:                       # a benchmark writes its JSON file
            pathlib.Path(cmd[cmd.index("--json") + 1]).write_text('{"rows": [1, 2]}')
        failed = "--tf32" in cmd
        return {"cmd": cmd, "rc": 1 if failed else 0, "seconds": 0.1, "ok": not failed,
                "tail": "x"}
    monkeypatch.setattr(gpu_check, "run_step", fake_step)
    monkeypatch.setattr(gpu_check.shutil, "which",
                        lambda tool: "/opt/cs" if tool == "compute-sanitizer" else None)
    out = tmp_path / "check.json"
    assert gpu_check.check(out, verdict=lambda: ("run", None)) == 1     # the TF32 step failed
    doc = json.loads(out.read_text())
    assert list(doc["steps"]) == ["pytest -m gpu", "conv_bench fp32",
                                  "compute-sanitizer memcheck", "compute-sanitizer racecheck",
                                  "conv_bench tf32", "gpu_model"]
    assert doc["results"]["conv_fp32"] == {"rows": [1, 2]} and "gpu_model" in doc["results"]
    assert doc["ok"] is False and not doc["steps"]["conv_bench tf32"]["ok"]
    assert ["-m", "gpu"] == ran[0][3:5] and ran[2][:3] == ["/opt/cs", "--tool", "memcheck"]
    assert ran[0][-1] == str(gpu_check.ROOT / "tests")          # every GPU test, not one file
    assert gpu_check.check(out, verdict=lambda: ("run", None), sha="abc123") == 1
    assert json.loads(out.read_text())["commit"] == "abc123"     # a copied tree has no .git
    assert envs[0] is None and envs[-1]["TINYRES_COMMIT"] == "abc123"   # and the steps
    assert "TINYRES_COMMIT" not in os.environ                       # this process untouched


def test_benchmarks_record_the_commit_gpu_check_hands_them(monkeypatch):
    """A copied tree's .git can be stale (the H200's copy reported an older commit), so
    the benchmarks take the commit from $TINYRES_COMMIT where gpu_check --commit sets it."""
    timing = _benchmark("_timing")
    monkeypatch.delenv("TINYRES_COMMIT", raising=False)
    from_git = timing.git_commit()
    monkeypatch.setenv("TINYRES_COMMIT", "0123456789abcdef")
    assert timing.git_commit() == "0123456" != from_git


def test_float32_gemm_probe_tells_strict_fp32_from_tf32(monkeypatch):
    """gpu_check's probe of CuPy's float32 GEMMs, with NumPy standing in for CuPy: strict
    float32 products come out near 1e-6 of float64, products of inputs rounded to TF32's
    10 mantissa bits near 1e-3, on each of the three routes."""
    from tinyres import gpu_check

    def tf32(a):
        bits = np.asarray(a, np.float32).view(np.uint32) & np.uint32(0xFFFFE000)
        return bits.view(np.float32)
    linalg = SimpleNamespace(compute_type_to_str=lambda t: "FAKE",
                             get_compute_type=lambda dtype: 0)
    monkeypatch.setitem(sys.modules, "cupy._core", SimpleNamespace(_routines_linalg=linalg))
    monkeypatch.setitem(sys.modules, "cupy._core._routines_linalg", linalg)
    for matmul, low, high in ((np.matmul, 0, 1e-5),
                              (lambda x, y: np.matmul(tf32(x), tf32(y)), 1e-4, 1e-2)):
        monkeypatch.setitem(sys.modules, "cupy", SimpleNamespace(
            asarray=np.asarray, asnumpy=np.asarray, matmul=matmul))
        errors = gpu_check.float32_gemm_errors()
        assert errors.pop("compute_type") == "FAKE"
        assert set(errors) == {"2-D", "batched", "shared weight"}
        assert all(low < e < high for e in errors.values()), errors


def test_gpu_check_steps_record_timeouts_and_missing_programs(tmp_path):
    from tinyres import gpu_check

    def times_out(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw["timeout"], output="partial output")

    def missing(cmd, **kw):
        raise FileNotFoundError(2, "No such file", cmd[0])
    slow = gpu_check.run_step(["x"], 5, runner=times_out)
    assert slow["rc"] == "timeout" and not slow["ok"] and "partial output" in slow["tail"]
    assert gpu_check.run_step(["nope"], 5, runner=missing)["rc"] == "not run"
    log = tmp_path / "steps.log"
    good = gpu_check.run_step([sys.executable, "-c", "print('hi')"], 60, log=log)
    assert good["ok"] and good["tail"].strip() == "hi"
    gpu_check.run_step(["nope"], 5, runner=missing, log=log)
    text = log.read_text()
    assert "rc 0\nhi" in text and "rc not run\nFileNotFoundError" in text
    doc = gpu_check.assemble(("run", None), {}, "abc", {"a": good}, {})
    assert doc["ok"] and doc["commit"] == "abc"
    assert not gpu_check.assemble(("fail", "broken"), {}, "abc", {"a": good}, {})["ok"]


# ------------------------------------------------------------- benchmarks/conv_bench.py
def test_conv_bench_output_check_and_help():
    bench = _benchmark("conv_bench")
    ref = [np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)]
    assert bench.compare_outputs([ref[0] + 1e-6], ref, tf32=False)["ok"]
    strict = bench.compare_outputs([ref[0] * 1.001], ref, tf32=False)
    assert not strict["ok"] and strict["max_rel_err"] == pytest.approx(1e-3, rel=1e-3)
    assert bench.compare_outputs([ref[0] * 1.001], ref, tf32=True)["ok"]
    assert not bench.compare_outputs([ref[0][:2]], ref, tf32=True)["ok"]
    done = subprocess.run([sys.executable, "benchmarks/conv_bench.py", "--help"],
                          cwd=pathlib.Path(__file__).resolve().parents[1],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "--tf32" in done.stdout
    assert not hasattr(bench, "cupy_cudnn_step")


def test_conv_bench_cpu_path_builds_worker_specs_and_counts_a_step(monkeypatch):
    """`conv_bench.py --device cpu` hands cpu_bench's workers a spec per engine (cpu_specs,
    through _timing.run_case's own signature) and counts one tinyres step itself. The
    workers are stood in for here; test_bench_harness.py runs real ones end to end."""
    bench = _benchmark("conv_bench")
    cpu_bench = _benchmark("cpu_bench")
    layer = cpu_bench.conv_cases("r20", cpu_bench.distinct(
        cpu_bench.model_convs("resnet20", 2)[0])[:1], ops=("fwd",))[0]
    model = cpu_bench.model_case("resnet20", "train", 2)
    monkeypatch.setattr(bench, "shape_cases", lambda quick, device: [("resnet20", layer)])
    monkeypatch.setattr(bench, "model_cases", lambda quick, device: [model])
    asked = []

    def run_case(script, specs, rounds, envs=None):
        asked.append((script, specs, rounds))
        return {e: {"ms": 2.0 if e == "tinyres" else 4.0} for e in specs}

    monkeypatch.setattr(bench._timing, "run_case", run_case)
    extra, rows, models = bench.run_cpu(SimpleNamespace(quick=True, threads=1,
                                                        no_models=False), {})
    assert extra == {"reference": "torch CPU"}
    assert [set(specs) for _, specs, _ in asked] == [{"tinyres", "torch"}] * 2
    for (script, specs, rounds), case in zip(asked, (layer, model)):
        assert script == os.path.abspath(cpu_bench.__file__) and rounds == 2
        assert all(spec["case"]["name"] == case["name"] and spec["mode"] == "warm"
                   and spec["case"]["threads"] == 1 for spec in specs.values())
    assert rows[0]["tinyres"]["ms"] == 2.0 and rows[0]["ref"]["ms"] == 4.0
    assert models[0]["tinyres"]["images_per_s"] == 1000.0
    assert models[0]["tinyres"]["per_step"]["host_reads"] == 0


class FakeEvent:
    """Stands in for a CUDA event: every interval lasts 2 ms."""

    def record(self):
        pass

    def synchronize(self):
        pass

    @staticmethod
    def elapsed(start, end):
        return 2.0


def test_conv_bench_gpu_step_makers_run_and_agree_on_the_cpu():
    """The GPU rows' own step makers, run on the CPU (device="cpu"), through gpu_shape_row
    with a stand-in for CUDA events: what a lent GPU runs cannot rot unseen (a helper they
    used moved once, and only a GPU run found out)."""
    import time
    bench = _benchmark("conv_bench")
    cpu_bench = _benchmark("cpu_bench")
    convs = cpu_bench.distinct(cpu_bench.model_convs("resnet20", 2)[0])
    on_cpu = [("tinyres", lambda c, np_: bench.tinyres_gpu_step(c, np_, "cpu"), lambda f: 0.0),
              ("ref", lambda c, np_: bench.torch_gpu_step(c, np_, "cpu"), lambda f: 0.0)]

    class Event:
        def record(self):
            self.t = time.perf_counter()

        def synchronize(self):
            pass
    Event.elapsed = staticmethod(lambda a, b: (b.t - a.t) * 1e3)
    for case in cpu_bench.conv_cases("r20", [convs[0], convs[2]]):     # stride 1 and 2
        row = bench.finish_row(bench.gpu_shape_row("resnet20", case, on_cpu, False, 1, 2,
                                                   Event, lambda: None, lambda: None))
        assert "error" not in row["tinyres"] and "error" not in row["ref"], row
        assert row["check"]["ok"], (case["name"], row["check"])
        assert row["ratio"] > 0
    model = cpu_bench.model_case("resnet20", "train", 2)
    for maker in (bench.tinyres_gpu_model_step, bench.torch_gpu_model_step):
        maker(model, np, device="cpu")()


def test_conv_bench_gpu_row_times_measures_and_checks_each_engine():
    bench = _benchmark("conv_bench")
    case = {"name": "r50 conv", "op": "fwd+bwd", "flops": 6e9}

    def engine(scale, fail=False):
        def maker(case, np_):
            if fail:
                raise MemoryError("out of memory")
            return (lambda: None), (lambda: [np.ones((2, 2), np.float32) * scale])
        return maker
    released = []
    run = functools.partial(bench.gpu_shape_row, "resnet50", case, tf32=False, warmup=1,
                            reps=3, event=FakeEvent, sync=lambda: None,
                            release=lambda: released.append(1))
    row = bench.finish_row(run([("tinyres", engine(1.0), lambda s: 12.0),
                                ("ref", engine(1.0), lambda s: 10.0)]))
    assert row["tinyres"] == {"ms": 2.0, "peak_mb": 12.0, "gflops": 3000.0}   # 6 GFLOP in 2 ms
    assert row["ratio"] == 1.0 and row["check"] == {"max_rel_err": 0.0, "ok": True}
    assert len(released) == 2
    wrong = run([("tinyres", engine(1.5), lambda s: 1.0), ("ref", engine(1.0), lambda s: 1.0)])
    assert wrong["check"]["ok"] is False and wrong["check"]["max_rel_err"] == 0.5
    broken = run([("tinyres", engine(1.0, fail=True), lambda s: 1.0),
                  ("ref", engine(1.0), lambda s: 1.0)])
    assert broken["tinyres"] == {"error": "MemoryError: out of memory"} and "check" not in broken


def test_conv_bench_pins_torch_tf32_both_ways():
    torch = pytest.importorskip("torch")
    bench = _benchmark("conv_bench")
    try:
        assert set(bench.pin_torch_tf32(torch, True).values()) <= {"tf32", True}
        strict = bench.pin_torch_tf32(torch, False)
        assert set(strict.values()) <= {"ieee", False} and strict
        if hasattr(torch.backends.cudnn, "fp32_precision"):
            assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    finally:
        if hasattr(torch.backends.cudnn, "fp32_precision"):   # torch's defaults again
            torch.backends.cuda.matmul.fp32_precision = "none"
            torch.backends.cudnn.fp32_precision = "none"
            torch.backends.cudnn.conv.fp32_precision = "tf32"


def test_conv_bench_refuses_a_torch_whose_conv_precision_does_not_take():
    """torch 2.11 on an H200 kept cudnn.conv at 'tf32' after cudnn.fp32_precision='ieee':
    a strict run must stop rather than compare against TF32 convolutions."""
    bench = _benchmark("conv_bench")

    class Stuck:                                  # a setting that ignores what it is given
        fp32_precision = property(lambda self: "tf32", lambda self, value: None)
    cudnn = SimpleNamespace(fp32_precision="none", conv=Stuck())
    fake = SimpleNamespace(backends=SimpleNamespace(
        cudnn=cudnn, cuda=SimpleNamespace(matmul=SimpleNamespace(fp32_precision="none"))))
    with pytest.raises(RuntimeError, match="could not be set to ieee"):
        bench.pin_torch_tf32(fake, False)
    assert bench.pin_torch_tf32(fake, True) == {"matmul": "tf32", "cudnn_conv": "tf32"}
