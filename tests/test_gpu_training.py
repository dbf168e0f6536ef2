"""Training on the GPU (`pytest -m gpu`) beside PyTorch on the GPU: what a user does with a
model, not one kernel at a time, at real sizes.

- A resnet20 trained for three steps (SGD with momentum and weight decay, per tensor and
  fused; Adam fused) on 'cuda' follows torch's twin trained on 'cuda' from the same
  weights: losses, parameters and running statistics after every step, in float64 (to
  1e-9: float32 rounding is amplified chaotically over steps through batch norm, so only
  float64 tells a wrong update from noise; the float32 kernels are held to the reference
  one by one in test_gpu.py and on resnet50 below).
- Evaluation mode and a checkpoint: the trained model's eval output equals torch's; the
  checkpoint written from the GPU (model, optimizer, epoch) loads into a fresh model on
  the GPU and on the CPU, both give the same eval output, and one more step from the
  restored GPU state equals one more step from the state that was never saved.
- resnet50 at its ImageNet size (batch 8, 224x224) on the GPU: output, loss and every
  parameter gradient of one float32 training step against torch's on the GPU, strict
  FP32 on both sides (no TF32 in torch's cuDNN or matmuls; CuPy's float32 compute type).
Each check is a function of (device, torch_device), so its logic is the one the CPU runs
of test_models.py and test_optim_torch.py check; here it runs on 'cuda' only.
"""
import numpy as np
import pytest

import tinyres
import tinyres.nn.functional as F
from tinyres import models, optim
from tinyres.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")

OPTIMIZERS = {
    "sgd": ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-4)),
    "sgd-fused": ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-4, fused=True)),
    "adam-fused": ("Adam", dict(lr=1e-3, weight_decay=1e-4, fused=True)),
}


def strict_fp32_torch():
    """torch's cuDNN convolutions and matmuls without TF32, as tinyres's float32 GEMMs."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def twins(name, device, torch_device, dtype=np.float32, seed=0):
    """(torch model, tinyres model) of `dtype` with the same weights and non-trivial
    batch-norm parameters and statistics, each on its device."""
    import torch_resnets
    torch.manual_seed(seed)
    theirs = getattr(torch_resnets, name)()      # drawn in float32 whatever the dtype
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    theirs = theirs.to(getattr(torch, np.dtype(dtype).name))
    ours = models.from_state_dict(name, {k: v.numpy() for k, v in theirs.state_dict().items()},
                                  dtype=dtype)
    return theirs.to(torch_device), ours.to(device)


def batch(shape, classes, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(dtype),
            rng.integers(0, classes, size=shape[0]))


def torch_step(model, opt, x, y, device):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(torch.tensor(x, device=device)),
                                             torch.tensor(y, device=device))
    loss.backward()
    opt.step()
    return loss.item()


def tinyres_step(model, opt, x, y, device):
    opt.zero_grad()
    loss = F.cross_entropy(model(tinyres.tensor(x, device=device)),
                           tinyres.tensor(y, device=device))
    loss.backward()
    opt.step()
    return loss.item()


def relative_error(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def assert_states_close(ours, theirs, tol, what):
    """Every state_dict entry of the tinyres model within tol (relative to the entry's
    largest magnitude) of torch's."""
    mine = {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v)
            for k, v in ours.state_dict().items()}
    for k, v in theirs.state_dict().items():
        err = relative_error(mine[k].astype(np.float64), v.detach().cpu().numpy())
        assert err < tol, f"{what}: {k} relative error {err:.2e}"


def check_training_follows_torch(optimizer, device, torch_device, steps=3, tol=1e-9):
    name, options = OPTIMIZERS[optimizer]
    theirs, ours = twins("resnet20", device, torch_device, np.float64)
    theirs.train(), ours.train()
    topt = getattr(torch.optim, name)(theirs.parameters(), **options)
    oopt = getattr(optim, name)(ours.parameters(), **options)
    for step in range(steps):
        x, y = batch((16, 3, 32, 32), 10, seed=step, dtype=np.float64)
        want, got = torch_step(theirs, topt, x, y, torch_device), tinyres_step(
            ours, oopt, x, y, device)
        assert abs(got - want) <= tol * abs(want), f"step {step}: loss {got} vs {want}"
        assert_states_close(ours, theirs, tol, f"after step {step}")
    return theirs, ours, topt, oopt


def check_eval_and_checkpoint(tmp_path, device, torch_device):
    theirs, ours, _, oopt = check_training_follows_torch("sgd-fused", device, torch_device,
                                                         steps=2)
    theirs.eval(), ours.eval()
    x, y = batch((8, 3, 32, 32), 10, seed=10, dtype=np.float64)
    with torch.no_grad():
        want = theirs(torch.tensor(x, device=torch_device)).cpu().numpy()
    with tinyres.no_grad():
        got = ours(tinyres.tensor(x, device=device)).numpy()
    assert relative_error(got, want) < 1e-9
    path = tmp_path / "gpu.ckpt.npz"
    save_checkpoint(path, ours, oopt, epoch=2)
    ckpt = load_checkpoint(path)
    assert ckpt.epoch == 2
    for where in (device, "cpu"):
        fresh = models.get_model("resnet20").double()
        fresh.load_state_dict(ckpt.model)
        fresh.to(where).eval()
        with tinyres.no_grad():
            again = fresh(tinyres.tensor(x, device=where)).numpy()
        np.testing.assert_allclose(again, got, rtol=1e-12, atol=1e-12, err_msg=where)
    # one more step from the restored state equals one more step from the live one
    restored = models.get_model("resnet20").double()
    restored.load_state_dict(ckpt.model)
    restored.to(device).train()
    ropt = optim.SGD(restored.parameters(), **OPTIMIZERS["sgd-fused"][1])
    ropt.load_state_dict(ckpt.optimizer)
    ours.train()
    x, y = batch((16, 3, 32, 32), 10, seed=11, dtype=np.float64)
    live, back = tinyres_step(ours, oopt, x, y, device), tinyres_step(restored, ropt, x, y,
                                                                       device)
    assert live == back
    for (k, a), b in zip(ours.state_dict().items(), restored.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()), err_msg=k)


def resnet50_step(engine, model, x, y, device):
    """One forward and backward: (output, loss, all parameter gradients as one float64
    vector, parameters in the order of their names)."""
    if engine == "torch":
        out = model(torch.tensor(x, device=device))
        loss = torch.nn.functional.cross_entropy(out, torch.tensor(y, device=device))
        loss.backward()
        grads = {k: p.grad.cpu().numpy() for k, p in model.named_parameters()}
        return out.detach().cpu().numpy(), loss.item(), flat(grads)
    out = model(tinyres.tensor(x, device=device))
    loss = F.cross_entropy(out, tinyres.tensor(y, device=device))
    loss.backward()
    return out.numpy(), loss.item(), flat({k: p.grad.numpy()
                                           for k, p in model.named_parameters()})


def flat(grads):
    return np.concatenate([grads[k].ravel().astype(np.float64) for k in sorted(grads)])


def normwise(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def check_resnet50_real_size(device, torch_device):
    """tinyres in float32 against torch in float64 (the truth) is as close as torch in
    float32 is: outputs and loss to 1e-4 of the truth, the gradients (normwise, all
    parameters) within 3x torch float32's own error. (Float32 gradients of a 50-layer
    network differ from the truth by about a percent; two float32 engines, each that
    close to the truth, cannot be held to each other much tighter.)"""
    x, y = batch((8, 3, 224, 224), 1000, seed=3, dtype=np.float64)
    truth_model, _ = twins("resnet50", "cpu", torch_device, np.float64)
    truth = resnet50_step("torch", truth_model.train(), x, y, torch_device)
    theirs, ours = twins("resnet50", device, torch_device, np.float32)
    x32 = x.astype(np.float32)
    torch32 = resnet50_step("torch", theirs.train(), x32, y, torch_device)
    ours32 = resnet50_step("tinyres", ours.train(), x32, y, device)
    assert relative_error(ours32[0], truth[0]) < 1e-4
    assert abs(ours32[1] - truth[1]) < 1e-4 * abs(truth[1])
    theirs_err, ours_err = normwise(torch32[2], truth[2]), normwise(ours32[2], truth[2])
    assert ours_err <= 3 * theirs_err + 1e-6, (ours_err, theirs_err)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_resnet20_training_on_the_gpu_follows_torch_on_the_gpu(optimizer):
    strict_fp32_torch()
    check_training_follows_torch(optimizer, "cuda", "cuda")


def test_eval_and_a_checkpoint_written_from_the_gpu(tmp_path):
    strict_fp32_torch()
    check_eval_and_checkpoint(tmp_path, "cuda", "cuda")


def test_resnet50_at_imagenet_size_on_the_gpu_matches_torch_on_the_gpu():
    strict_fp32_torch()
    check_resnet50_real_size("cuda", "cuda")
