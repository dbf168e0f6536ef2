"""The GPU run: `pytest -m gpu`. Every op gradient-checked in float64 on 'cuda', the CUDA
kernels against the NumPy reference, and resnet20 / resnet18 on the GPU against the CPU.
Skipped only where the GPU is explicitly absent; a GPU with a broken stack fails every test
with the reason (tests/conftest.py, tinyres/gpu_probe.py). The smoke test first proves the
three things the rest rely on: NVRTC compiles a kernel, it launches, cuBLAS multiplies."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyres
import tinyres.nn.functional as F
from namespaces import TinyresOps
from op_cases import CASES
from tinyres import models

pytestmark = pytest.mark.gpu

SMOKE = """
template <typename T>
__global__ void axpb(const T* x, T* y, T a, T b, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + b;
}
"""


def test_smoke_rawmodule_compiles_and_launches_and_cublas_multiplies(tmp_path):
    import cupy
    from tinyres.kernels import cuda_build
    from cupy.cuda import nvrtc
    dev = cupy.cuda.Device()
    arch, kind = cuda_build.target(dev.compute_capability, set(nvrtc.getSupportedArchs()))
    built = cuda_build.build(SMOKE, "smoke.cu", arch, kind, ["axpb<float>"], ("smoke",),
                             directory=tmp_path)
    kernel = cupy.RawModule(path=str(built.path)).get_function(built.lowered["axpb<float>"])
    x = cupy.arange(1000, dtype=cupy.float32)
    y = cupy.empty_like(x)
    kernel((4,), (256,), (x, y, np.float32(2), np.float32(1), np.int32(x.size)))
    np.testing.assert_array_equal(cupy.asnumpy(y), 2 * np.arange(1000, dtype=np.float32) + 1)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 48)), rng.standard_normal((48, 32))   # float64: exact-ish
    np.testing.assert_allclose(cupy.asnumpy(cupy.asarray(a) @ cupy.asarray(b)), a @ b,
                               rtol=1e-12, atol=1e-12)


def test_launchers_refuse_arrays_of_another_device_or_the_host():
    import cupy
    from tinyres.kernels import cuda
    with pytest.raises(RuntimeError, match=r"relu_forward: array x is on cpu"):
        cuda.relu_forward(np.ones(3, np.float32))
    if cupy.cuda.runtime.getDeviceCount() > 1:
        with cupy.cuda.Device(1):
            x = cupy.ones(3, cupy.float32)
        with pytest.raises(RuntimeError, match=r"array x is on cuda:1 .* cuda:0"):
            cuda.relu_forward(x)


def test_denormal_relu_gradient_matches_the_reference_on_the_gpu():
    import cupy
    from tinyres.kernels import cuda, reference
    x = np.array([1e-40, -1e-40, 0.0, 1.0], np.float32)        # two float32 denormals
    g = np.full(4, 3.0, np.float32)
    got = cupy.asnumpy(cuda.relu_backward(cupy.asarray(g), cupy.asarray(x)))
    np.testing.assert_array_equal(got, reference.relu_backward(g, x))
    np.testing.assert_array_equal(cupy.asnumpy(cuda.relu_forward(cupy.asarray(x))),
                                  reference.relu_forward(x))


class CudaOps(TinyresOps):
    """The op namespace with every tensor on the GPU."""

    @staticmethod
    def tensor_like(value, like):
        return TinyresOps.tensor_like(value, like).to("cuda")

    @staticmethod
    def wrap(array, requires_grad):
        import cupy
        return tinyres.Tensor(cupy.asarray(array), requires_grad=requires_grad)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_gradcheck_float64_on_cuda(case, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    arrays, params = case.draw_inputs(data.draw, rng)
    ops = CudaOps()
    inputs = [ops.wrap(a, requires_grad=True) for a in arrays]
    assert tinyres.gradcheck(lambda *ts: case.call(ops, *ts, **params), inputs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_kernels_match_the_reference(dtype):
    import cupy
    from tinyres.kernels import cuda, reference
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 11, 9)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)

    def same(ours, ref):
        for a, b in zip(ours if isinstance(ours, tuple) else (ours,),
                        ref if isinstance(ref, tuple) else (ref,)):
            np.testing.assert_allclose(cupy.asnumpy(a), b, **tol)

    for window in [(3, 3, 1, 1, 1, 1), (1, 1, 2, 2, 0, 0), (2, 3, 3, 2, 1, 1)]:
        cols = reference.im2col(x, *window)
        same(cuda.im2col(cupy.asarray(x), *window), cols)
        same(cuda.col2im(cupy.asarray(cols), x.shape, *window),
             reference.col2im(cols, x.shape, *window))
        w2 = rng.standard_normal((4, x.shape[1] * window[0] * window[1])).astype(dtype)
        out = reference.conv2d_forward(x, w2, *window)
        same(cuda.conv2d_forward(cupy.asarray(x), cupy.asarray(w2), *window), out)
        same(cuda.conv2d_backward(cupy.asarray(out), cupy.asarray(x), cupy.asarray(w2), *window),
             reference.conv2d_backward(out, x, w2, *window))
        y, idx = reference.maxpool_forward(x, *window)
        same(cuda.maxpool_forward(cupy.asarray(x), *window), (y, idx))
        same(cuda.maxpool_backward(cupy.asarray(y), cupy.asarray(idx), x.shape, *window),
             reference.maxpool_backward(y, idx, x.shape, *window))
    w, b = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
    rm, rv = np.zeros(5, dtype), np.ones(5, dtype)
    rm_gpu, rv_gpu = cupy.asarray(rm), cupy.asarray(rv)
    y, mean, invstd = reference.batchnorm_forward(x, w, b, rm, rv, 0.1, 1e-5)
    same(cuda.batchnorm_forward(*map(cupy.asarray, (x, w, b)), rm_gpu, rv_gpu, 0.1, 1e-5),
         (y, mean, invstd))
    same((rm_gpu, rv_gpu), (rm, rv))
    same(cuda.batchnorm_backward(*map(cupy.asarray, (g, x, w, mean, invstd))),
         reference.batchnorm_backward(g, x, w, mean, invstd))
    same(cuda.relu_forward(cupy.asarray(x)), reference.relu_forward(x))
    same(cuda.relu_backward(cupy.asarray(g), cupy.asarray(x)), reference.relu_backward(g, x))


# resnet18's layers at batch 2 and 64x64 (maps of 32 down to 2): (name, C, H, OC, k, s, p)
RESNET18_64 = [("stem 7x7/2", 3, 64, 64, 7, 2, 3), ("layer1 3x3", 64, 16, 64, 3, 1, 1),
               ("layer2 3x3/2", 64, 16, 128, 3, 2, 1), ("layer2 1x1/2", 64, 16, 128, 1, 2, 0),
               ("layer2 3x3", 128, 8, 128, 3, 1, 1), ("layer3 3x3/2", 128, 8, 256, 3, 2, 1),
               ("layer3 1x1/2", 128, 8, 256, 1, 2, 0), ("layer3 3x3", 256, 4, 256, 3, 1, 1),
               ("layer4 3x3/2", 256, 4, 512, 3, 2, 1), ("layer4 1x1/2", 256, 4, 512, 1, 2, 0),
               ("layer4 3x3", 512, 2, 512, 3, 1, 1)]


# the largest error allowed, relative to an output's largest magnitude, against float64
LAYER_TOLERANCE = {np.float64: 1e-10, np.float32: 1e-4}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("layer", RESNET18_64, ids=lambda layer: layer[0])
def test_kernels_at_resnet18_layer_shapes_match_the_reference(layer, dtype):
    """Each of resnet18's convolutions at batch 2 on 64x64 images (forward, both
    gradients), the batch norm (plain and fused with ReLU) and ReLU on its output, and the
    max-pool after the stem, on the GPU against reference.py in float64, to
    LAYER_TOLERANCE of each output's largest magnitude: small maps (2x2) and many
    channels, where whole-model float32 gradients on an H200 were 8e-3 off the float64
    result (the CPU's 6e-6) while float64 agreed to 1e-9."""
    import cupy
    from tinyres.kernels import cuda, reference
    name, c, h, oc, k, s, p = layer
    rng = np.random.default_rng(len(name) + c)
    x = rng.standard_normal((2, c, h, h))
    w2 = rng.standard_normal((oc, c * k * k)) / np.sqrt(c * k * k)
    tol = LAYER_TOLERANCE[dtype]
    window = (k, k, s, s, p, p)

    def same(what, ours, ref):
        for i, (a, b) in enumerate(zip(ours if isinstance(ours, tuple) else (ours,),
                                       ref if isinstance(ref, tuple) else (ref,))):
            a = cupy.asnumpy(a)
            assert a.shape == b.shape, (what, i, a.shape, b.shape)
            err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)
            assert err < tol, f"{name}: {what} output {i} off by {err:.2e} of its scale"

    def exact(a):                # a float input as dtype holds it, for the reference too
        return a.astype(dtype).astype(np.float64)

    def gpu(a):
        return cupy.asarray(a.astype(dtype) if a.dtype.kind == "f" else a)
    x, w2 = exact(x), exact(w2)
    out = reference.conv2d_forward(x, w2, *window)
    same("conv2d_forward", cuda.conv2d_forward(gpu(x), gpu(w2), *window), out)
    out, g = exact(out), exact(rng.standard_normal(out.shape))   # the next ops' inputs
    same("conv2d_backward", cuda.conv2d_backward(gpu(g), gpu(x), gpu(w2), *window),
         reference.conv2d_backward(g, x, w2, *window))
    wt, bs = exact(rng.standard_normal(oc)), exact(rng.standard_normal(oc))
    for fwd, bwd in (("batchnorm_forward", "batchnorm_backward"),
                     ("batchnorm_relu_forward", "batchnorm_relu_backward")):
        rm, rv = np.zeros(oc), np.ones(oc)
        ref_out = getattr(reference, fwd)(out, wt, bs, rm, rv, 0.1, 1e-5)
        got = getattr(cuda, fwd)(gpu(out), gpu(wt), gpu(bs), gpu(np.zeros(oc)),
                                 gpu(np.ones(oc)), 0.1, 1e-5)
        same(fwd, got, ref_out)
        y, mean, invstd = map(exact, ref_out)
        pre = (g, y) if "relu" in bwd else (g,)
        same(bwd, getattr(cuda, bwd)(*map(gpu, pre), gpu(out), gpu(wt), gpu(mean),
                                     gpu(invstd)),
             getattr(reference, bwd)(*pre, out, wt, mean, invstd))
    same("relu_backward", cuda.relu_backward(gpu(g), gpu(out)), reference.relu_backward(g, out))
    if name.startswith("stem"):                   # the max-pool 3x3/2 after the stem
        pool = (3, 3, 2, 2, 1, 1)
        y, idx = reference.maxpool_forward(out, *pool)
        same("maxpool_forward", cuda.maxpool_forward(gpu(out), *pool), (y, idx))
        gy = exact(rng.standard_normal(y.shape))
        same("maxpool_backward", cuda.maxpool_backward(gpu(gy), gpu(idx), out.shape, *pool),
             reference.maxpool_backward(gy, idx, out.shape, *pool))


def _model_gradients(name, shape, dtype, device, state=None):
    """(loss, grad of the input, grads of the parameters) of one cross-entropy backward
    of a fresh `name` (with `state` loaded) in `dtype` on `device`."""
    tinyres.manual_seed(0)
    model = models.get_model(name)
    if state is not None:
        model.load_state_dict(state)
    model.to(device=device, dtype=tinyres.float64 if dtype == np.float64 else tinyres.float32)
    rng = np.random.default_rng(0)
    x = tinyres.tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True,
                       device=device)
    y = tinyres.tensor(rng.integers(0, 10, size=shape[0]), device=device)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return (loss.item(), x.grad.numpy(),
            {k: p.grad.numpy() for k, p in model.named_parameters()}), model.state_dict()


def _relative_errors(got, want):
    """Norm-wise relative error of the loss, the input gradient and each parameter's."""
    def rel(a, b):
        return float(np.linalg.norm(np.asarray(a, np.float64) - b)
                     / max(np.linalg.norm(b), 1e-300))
    return {"loss": rel(got[0], want[0]), "x.grad": rel(got[1], want[1]),
            **{k: rel(got[2][k], want[2][k]) for k in want[2]}}


MODEL_CASES = [("resnet20", (4, 3, 32, 32)), ("resnet18", (2, 3, 64, 64))]


@pytest.mark.parametrize("name,shape", MODEL_CASES)
def test_models_on_cuda_match_the_cpu_in_float64(name, shape):
    """The same model, weights and batch on the CPU and on the GPU in float64: the kernels
    differ only in summation order, so every gradient agrees to 1e-9 (norm-wise)."""
    cpu, state = _model_gradients(name, shape, np.float64, "cpu")
    gpu, _ = _model_gradients(name, shape, np.float64, "cuda", state)
    errors = _relative_errors(gpu, cpu)
    assert max(errors.values()) < 1e-9, {k: e for k, e in errors.items() if e >= 1e-9}


@pytest.mark.parametrize("name,shape", MODEL_CASES)
def test_models_on_cuda_in_float32_are_as_accurate_as_the_cpu(name, shape):
    """Against the float64 result, the GPU's float32 gradients are no further off than a
    few times the CPU's own float32 error (or 1e-4): resnet18 at 2x2 maps and batch 2
    normalises over 8 values in its last stage, where float32 summation orders differ by
    percents element-wise, so the float64 result is the referee, not the CPU's."""
    truth, state = _model_gradients(name, shape, np.float64, "cpu")
    cpu, _ = _model_gradients(name, shape, np.float32, "cpu", state)
    gpu, _ = _model_gradients(name, shape, np.float32, "cuda", state)
    cpu_err, gpu_err = _relative_errors(cpu, truth), _relative_errors(gpu, truth)
    worse = {k: (gpu_err[k], cpu_err[k]) for k in gpu_err
             if gpu_err[k] > max(4 * cpu_err[k], 1e-4)}
    assert not worse, worse
