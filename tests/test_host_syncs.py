"""Host reads and launches counted (tinyres.cuda.count_syncs), and a training step without
host reads.

- The counter: Tensor.item(), float(), bool(), .numpy() each count one read, nested
  blocks each see everything inside them, a finished block keeps its numbers, another
  thread's reads are not counted; the kernel launches of kernels/cuda.py's Launchers are
  counted, checked through the CPU emulator (kernels/emulate.py) when g++ is there.
- A resnet20 training step (forward, cross-entropy, backward, SGD) reads nothing; the
  same step with a planted loss.item() reads once (the check can fail). BatchNorm with
  momentum=None, dropout, label smoothing and train.py's running totals read nothing,
  and give torch's (or the old host path's) values; a training epoch of train.py reads
  once, and its totals are those of the old loop that read every batch.
- Deferred checks (the device path, forced on the CPU with deferred_checks(True)): a bad
  class target or a BCE input outside [0, 1] raises torch's kind of error at the next
  read or at check_pending(), the first failure is the one reported, whatever the
  target's shape (hypothesis: the same error as the check at the call, or the same loss
  as torch's); on the CPU by default the error comes at the call, as in torch.
- pin_memory: on a machine without CUDA the torch-style DataLoader warns as torch does
  and gives the same batches; the training loader's batches are unchanged.
- benchmarks/conv_bench.py counts one step and prints launches/step and syncs/step.
- On a GPU (`-m gpu`): the same step reads nothing and launches kernels, and it can be
  captured into a CUDA graph (which refuses any synchronisation); the pinned loader
  gives the unpinned batches.
"""
import threading
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyres
import tinyres.nn.functional as F
from tinyres import data, nn
from tinyres.cuda import check_pending, count_syncs, deferred_checks
from tinyres.models import get_model
from tinyres.train import RunningTotals

torch = pytest.importorskip("torch")


# ----- the counter -------------------------------------------------------------------------
def test_each_read_of_a_value_counts_once():
    t = tinyres.tensor([1.5])
    with count_syncs() as counted:
        assert counted.host_reads == 0
        t.item()
        float(t)
        bool(t)
        t.numpy()
        t.tolist()
        assert counted.host_reads == 5
        (t * 2).sum()                              # arithmetic reads nothing
    assert counted.host_reads == 5


def test_nested_blocks_and_a_finished_block_keep_their_counts():
    t = tinyres.tensor(2.0)
    with count_syncs() as outer:
        t.item()
        with count_syncs() as inner:
            t.item()
        t.item()
    t.item()
    assert (outer.host_reads, inner.host_reads) == (3, 1)
    assert repr(inner) == "SyncCount(host_reads=1, launches=0)"


def test_another_threads_reads_are_not_counted():
    t = tinyres.tensor(2.0)
    with count_syncs() as counted:
        worker = threading.Thread(target=lambda: [t.item() for _ in range(3)])
        worker.start()
        worker.join()
    assert counted.host_reads == 0


def test_launches_of_the_kernel_layer_are_counted():
    from tinyres.kernels import emulate
    try:
        launchers = emulate.backend()
    except emulate.EmulatorUnavailable as err:
        pytest.skip(str(err))
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    w, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    with count_syncs() as counted:
        launchers.relu_forward(x)
        launchers.batchnorm_forward(x, w, b, None, None, 0.1, 1e-5)   # stats, combine, apply
    assert (counted.launches, counted.host_reads) == (4, 0)


# ----- a training step -------------------------------------------------------------------
def _resnet20_step(read_loss=False):
    """A resnet20 and step(): forward, cross-entropy, backward, SGD (momentum, decay)."""
    tinyres.manual_seed(0)
    model = get_model("resnet20", num_classes=10)
    opt = tinyres.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    x = tinyres.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    y = tinyres.tensor(rng.integers(0, 10, 4))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if read_loss:
            loss.item()                         # the planted read
        return loss
    return step


@pytest.mark.parametrize("planted, reads", [(False, 0), (True, 1)])
def test_a_resnet20_training_step_reads_nothing_unless_told(planted, reads):
    step = _resnet20_step(read_loss=planted)
    with count_syncs() as counted:
        step()
        step()
    assert counted.host_reads == 2 * reads


def test_batchnorm_cumulative_average_reads_nothing_and_matches_torch():
    ours, ref = nn.BatchNorm2d(3, momentum=None), torch.nn.BatchNorm2d(3, momentum=None)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = (rng.standard_normal((4, 3, 5, 5)) * 2 + 1).astype(np.float32)
        with count_syncs() as counted:
            out = ours(tinyres.tensor(x))
        assert counted.host_reads == 0
        np.testing.assert_allclose(out.numpy(), ref(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-5, atol=1e-5)
    for key, value in ref.state_dict().items():
        got = ours.state_dict()[key]
        assert got.dtype == tinyres.tensor(value.numpy()).dtype, key
        np.testing.assert_allclose(got.numpy(), value.numpy(), rtol=1e-6, err_msg=key)


@pytest.mark.parametrize("op, shape, mask_shape", [(F.dropout, (3, 4, 5), (3, 4, 5)),
                                                   (F.dropout2d, (3, 4, 2, 2), (3, 4, 1, 1))])
def test_dropout_masks_read_nothing_and_are_numpys_global_draws(op, shape, mask_shape):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    tinyres.manual_seed(5)
    with count_syncs() as counted:
        out = op(tinyres.tensor(x), p=0.3)
    assert counted.host_reads == 0
    np.random.seed(5)
    keep = np.random.random_sample(mask_shape) >= 0.3
    np.testing.assert_allclose(out.numpy(), x * keep / np.float32(0.7), rtol=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_label_smoothing_mean_reads_nothing_and_matches_torch(weighted):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((6, 4))
    target = np.array([0, 3, -100, 2, 1, -100])
    weight = rng.random(4) if weighted else None
    kwargs = dict(ignore_index=-100, label_smoothing=0.2)
    with count_syncs() as counted:
        ours = F.cross_entropy(tinyres.tensor(logits), tinyres.tensor(target),
                               None if weight is None else tinyres.tensor(weight), **kwargs)
    assert counted.host_reads == 0
    ref = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(target),
        None if weight is None else torch.from_numpy(weight), **kwargs)
    assert ours.dtype == tinyres.float64
    np.testing.assert_allclose(ours.item(), ref.item(), rtol=1e-12)


def test_running_totals_read_once_and_equal_the_per_batch_sums():
    rng = np.random.default_rng(4)
    totals, loss_sum, correct = RunningTotals(), 0.0, 0
    with count_syncs() as counted:
        for n in (5, 3, 7):
            logits = tinyres.tensor(rng.standard_normal((n, 4)).astype(np.float32))
            labels = tinyres.tensor(rng.integers(0, 4, n))
            loss = F.cross_entropy(logits, labels)
            totals.add(loss, logits, labels)
            loss_sum += float(loss.array) * n
            correct += int((logits.array.argmax(1) == labels.array).sum())
        assert counted.host_reads == 0
        assert totals.read() == (loss_sum, correct)
        assert counted.host_reads == 1


def test_a_training_epoch_reads_once_and_gives_the_per_batch_totals():
    from tinyres.train import TrainConfig, Trainer
    config = TrainConfig(model="resnet20", data="synthetic", subset=32, batch_size=16,
                         epochs=1, seed=3, quiet=True, augment=False)
    trainer = Trainer(config)
    with count_syncs() as counted:
        total_loss, correct, seen = trainer.training_pass(0, trainer.model)
    assert counted.host_reads == 1 and seen == 32
    again = Trainer(config)                 # the same run, its batches read one by one
    again.model.train()
    loss_sum, hits = 0.0, 0
    for images, labels in again.train_loader:
        logits = again.model(images)
        loss = F.cross_entropy(logits, labels)
        again.optimizer.zero_grad()
        loss.backward()
        again.optimizer.step()
        loss_sum += loss.item() * len(labels.array)
        hits += int((logits.numpy().argmax(1) == labels.numpy()).sum())
    assert (total_loss, correct) == (loss_sum, hits)


# ----- checks made on the device, read later -----------------------------------------------
def _bad_targets(value):
    logits = tinyres.tensor(np.zeros((3, 10), np.float32))
    return F.cross_entropy(logits, tinyres.tensor([1, value, 2]))


def test_on_the_cpu_a_bad_target_raises_at_the_call_as_torch():
    with pytest.raises(IndexError, match="cross_entropy: Target 10 is out of bounds"):
        _bad_targets(10)
    with pytest.raises(IndexError, match="Target 10 is out of bounds"):
        torch.nn.functional.cross_entropy(torch.zeros(3, 10), torch.tensor([1, 10, 2]))


def test_a_deferred_target_check_raises_at_the_next_read():
    with deferred_checks(True):
        with count_syncs() as counted:
            loss = _bad_targets(10)                 # no error, nothing read
        assert counted.host_reads == 0
        with pytest.raises(IndexError, match="cross_entropy: Target 10 is out of bounds "
                                             r"\(classes 0 to 9\)"):
            loss.item()
        assert loss.item() == pytest.approx(np.log(10))     # raised once, then forgotten


def test_the_first_failure_is_reported_and_check_pending_reads_it():
    with deferred_checks(True):
        _bad_targets(1)                                        # fine
        F.nll_loss(tinyres.zeros(2, 5), tinyres.tensor([7, 0]))
        _bad_targets(12)
        with count_syncs() as counted:
            with pytest.raises(IndexError, match="nll_loss: Target 7 is out of bounds "
                                                 r"\(classes 0 to 4\)"):
                check_pending()
        assert counted.host_reads == 1
        check_pending()                                         # nothing left


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3), st.lists(st.integers(1, 3), max_size=2), st.integers(2, 5),
       st.data())
def test_the_deferred_check_agrees_with_the_call_time_one_and_torch(n, dims, c, draw):
    """Any target shape (N, *d): the deferred check raises what the check at the call
    raises (the first bad target in C order), or neither raises and the losses agree."""
    shape = (n, *dims)
    values = st.sampled_from([-100, -1, c]) | st.integers(0, c - 1)
    target = np.array(draw.draw(st.lists(values, min_size=int(np.prod(shape)),
                                         max_size=int(np.prod(shape))))).reshape(shape)
    logits = np.random.default_rng(n).standard_normal((n, c, *dims))

    def run():
        return F.cross_entropy(tinyres.tensor(logits), tinyres.tensor(target)).item()
    outcomes = []
    for deferred in (False, True):
        with deferred_checks(deferred):
            try:
                outcomes.append(run())
            except IndexError as err:
                outcomes.append(str(err))
    np.testing.assert_equal(outcomes[0], outcomes[1])          # NaN (all ignored) too
    try:
        ref = torch.nn.functional.cross_entropy(torch.from_numpy(logits),
                                                torch.from_numpy(target)).item()
    except IndexError:
        assert isinstance(outcomes[0], str) and "out of bounds" in outcomes[0]
    else:
        np.testing.assert_allclose(outcomes[0], ref, rtol=1e-12, equal_nan=True)


def test_deferred_checks_false_checks_at_the_call():
    with deferred_checks(False), pytest.raises(IndexError, match="Target -3"):
        _bad_targets(-3)


def test_a_deferred_probability_check_raises_torchs_error_at_the_next_read():
    x, t = np.array([0.2, 1.5, 0.5]), np.array([0.0, 1.0, 1.0])
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        torch.nn.functional.binary_cross_entropy(torch.from_numpy(x), torch.from_numpy(t))
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(tinyres.tensor(x), tinyres.tensor(t))
    with deferred_checks(True), np.errstate(invalid="ignore"):      # log(1 - 1.5) meanwhile
        loss = F.binary_cross_entropy(tinyres.tensor(x), tinyres.tensor(t))
        with pytest.raises(RuntimeError, match="binary_cross_entropy: all elements of input "
                                               "should be between 0 and 1"):
            loss.numpy()


# ----- pinned memory ---------------------------------------------------------------------
@pytest.mark.skipif(tinyres.cuda.is_available(), reason="a GPU is usable here")
def test_pin_memory_without_cuda_warns_as_torch_and_changes_nothing():
    x, y = np.arange(12.0, dtype=np.float32).reshape(6, 2), np.arange(6)
    batches = {}
    for lib, make in ((torch, torch.from_numpy), (tinyres, tinyres.from_numpy)):
        ds = lib.utils.data.TensorDataset(make(x), make(y))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batches[lib] = [[t.numpy() for t in b]
                            for b in lib.utils.data.DataLoader(ds, batch_size=4,
                                                               pin_memory=True)]
        assert [(w.category, str(w.message)) for w in caught] == [
            (UserWarning, "'pin_memory' argument is set as true but no accelerator is found, "
                          "then device pinned memory won't be used.")]
    for ours, ref in zip(batches[tinyres], batches[torch], strict=True):
        for a, b in zip(ours, ref, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_the_training_loaders_pin_memory_is_a_no_op_on_the_cpu():
    ds = data.ArrayDataset(np.arange(40, dtype=np.float32).reshape(5, 1, 2, 4), np.arange(5))
    plain = list(data.DataLoader(ds, 2, shuffle=True, seed=1))
    pinned = list(data.DataLoader(ds, 2, shuffle=True, seed=1, pin_memory=True))
    for (a, b), (c, d) in zip(plain, pinned, strict=True):
        np.testing.assert_array_equal(a.numpy(), c.numpy())
        np.testing.assert_array_equal(b.numpy(), d.numpy())


# ----- benchmarks/conv_bench.py ----------------------------------------------------------
def test_conv_bench_counts_and_prints_launches_and_syncs_per_step(capsys):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    import conv_bench
    case = {"name": "resnet20 train step batch 2", "model": "resnet20", "n": 2}
    counts = conv_bench.step_counts(conv_bench.tinyres_gpu_model_step(case, np, "cpu"))
    assert counts == {"launches": 0, "host_reads": 0}
    assert conv_bench.step_counts(lambda: tinyres.tensor(1.0).item())["host_reads"] == 1
    row = conv_bench.finish_row({"case": case, "tinyres": {
        "ms": 10.0, "images_per_s": 200.0, "per_step": {"launches": 312, "host_reads": 0}}})
    conv_bench.print_models([row])
    line = [t for t in capsys.readouterr().out.splitlines() if t.startswith("resnet20")][0]
    assert line.split()[-2:] == ["312", "0"]


# ----- on a GPU --------------------------------------------------------------------------
def _cuda_parts():
    """({name: part}, state): the parts of a resnet20 training step on the GPU, in order
    (the forward leaves its loss in state["loss"])."""
    tinyres.manual_seed(0)
    model = get_model("resnet20", num_classes=10).to("cuda")
    opt = tinyres.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    x = tinyres.tensor(rng.standard_normal((8, 3, 16, 16)).astype(np.float32), device="cuda")
    y = tinyres.tensor(rng.integers(0, 10, 8), device="cuda")
    state = {}
    parts = {"forward and loss": lambda: state.update(loss=F.cross_entropy(model(x), y)),
             "zero_grad": opt.zero_grad, "backward": lambda: state["loss"].backward(),
             "optimizer step": opt.step}
    return parts, state


def _cuda_step():
    parts, state = _cuda_parts()

    def step():
        for part in parts.values():
            part()
        return state["loss"]
    return step


@pytest.mark.gpu
def test_on_a_gpu_a_training_step_reads_nothing_and_launches_kernels():
    step = _cuda_step()
    step()                                          # compiles and loads the kernels
    with count_syncs() as counted:
        loss = step()
    assert counted.host_reads == 0 and counted.launches > 0
    assert np.isfinite(loss.item())


SPIN = r"""
extern "C" __global__ void spin(unsigned long long ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)); } while (now - start < ns);
}
"""


@pytest.mark.gpu
def test_on_a_gpu_a_training_step_never_waits_for_the_device():
    """A kernel that keeps the GPU busy for two seconds, then one part of a training step
    queued behind it: had anything in that part waited for the device (a read, a copy from
    pageable memory, a free that synchronises), it would return only after the spin. Each
    part returns while the spin still runs; the parts that waited are named. (Capturing the
    step in a CUDA graph would prove the same, but CuPy refuses cuBLAS calls during stream
    capture.)"""
    import cupy
    parts, state = _cuda_parts()
    for _ in range(2):                              # the memory pool holds the step's blocks
        for part in parts.values():
            part()
    spin = cupy.RawKernel(SPIN, "spin")
    start, spun = cupy.cuda.Event(), cupy.cuda.Event()
    waited = []
    for name, part in parts.items():
        start.record()
        spin((1,), (1,), (np.uint64(2_000_000_000),))
        spun.record()
        assert not spun.done, "the spinning kernel did not keep the GPU busy"
        part()
        if spun.done:
            waited.append(name)
        spun.synchronize()
        assert cupy.cuda.get_elapsed_time(start, spun) > 1500      # it did spin, ~2 s
    assert not waited, f"these parts of a step waited for the GPU: {waited}"
    assert np.isfinite(state["loss"].item())


@pytest.mark.gpu
def test_on_a_gpu_the_pinned_loader_gives_the_unpinned_batches():
    ds = data.ArrayDataset(np.arange(120, dtype=np.float32).reshape(5, 3, 2, 4), np.arange(5))
    plain = list(data.DataLoader(ds, 2, shuffle=True, seed=1, device="cuda"))
    pinned = list(data.DataLoader(ds, 2, shuffle=True, seed=1, device="cuda", pin_memory=True))
    assert len(plain) == len(pinned) == 3
    for (a, b), (c, d) in zip(plain, pinned):
        assert c.is_cuda and d.is_cuda and (c.dtype, d.dtype) == (a.dtype, b.dtype)
        np.testing.assert_array_equal(a.numpy(), c.numpy())
        np.testing.assert_array_equal(b.numpy(), d.numpy())
