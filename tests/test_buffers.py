"""kernels/buffers.py: the CPU kernels' large arrays come from blocks that are handed out
again only when nothing references them, so the cache changes no result and never lets
two live arrays share memory."""
import os
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest

import tinyres
from tinyres.kernels import buffers

BIG = (512, 1024)                   # 2 MB of float32: above buffers.MIN_BYTES


@pytest.fixture(autouse=True)
def cache_on():
    previous = buffers.enable(True)
    yield
    buffers.enable(previous)


@numba.njit
def _rows_after_first(a):
    return a[1:]          # an array Numba makes: it keeps its parent alive


def address(a):
    return a.__array_interface__["data"][0]


def test_large_arrays_come_from_blocks_small_ones_from_numpy():
    a = buffers.empty(BIG, np.float32)
    assert a.shape == BIG and a.dtype == np.float32 and a.flags.c_contiguous
    assert a.flags.writeable and not a.flags.owndata
    assert a.base.dtype == np.uint8 and a.base.nbytes == buffers.size_class(a.nbytes)
    small = buffers.empty((10, 10), np.float64)
    assert small.flags.owndata and small.shape == (10, 10) and small.dtype == np.float64
    assert buffers.empty(1 << 19, "float64").shape == (1 << 19,)      # an int shape


def test_a_freed_array_is_reused_and_a_live_one_never():
    a = buffers.empty(BIG, np.float32)
    where = address(a)
    b = buffers.empty(BIG, np.float32)
    assert address(b) != where                    # a is alive
    del a
    hits = buffers.stats()["hits"]
    c = buffers.empty(BIG, np.float32)
    assert address(c) == where and buffers.stats()["hits"] == hits + 1


@pytest.mark.parametrize("keep", ["view", "transposed slice", "memoryview", "reshape",
                                  "numba view"])
def test_anything_viewing_an_array_keeps_its_block(keep):
    a = buffers.empty(BIG, np.float32)
    a[...] = 7.0
    kept = {"view": lambda: a[1:],
            "transposed slice": lambda: a.T[::3],
            "memoryview": lambda: memoryview(a),
            "reshape": lambda: a.reshape(-1, 4),
            "numba view": lambda: _rows_after_first(a)}[keep]()
    del a
    fresh = [buffers.empty(BIG, np.float32) for _ in range(3)]
    for f in fresh:
        f[...] = -1.0
    assert (np.asarray(kept) == 7.0).all()


def test_sole_view_says_whether_anything_else_holds_an_arrays_memory():
    # what lets a leaf keep a gradient without a copy (backward._accumulate)
    a = buffers.empty(BIG, np.float32)
    assert buffers.sole_view(a)                      # a cache block's one view
    other = a.reshape(-1, 4)
    assert not buffers.sole_view(a) and not buffers.sole_view(other)
    del other
    assert buffers.sole_view(a)
    owner = np.ones(12)
    assert buffers.sole_view(owner)                  # owns its memory
    assert not buffers.sole_view(owner[2:])          # owner still named here
    assert buffers.sole_view(np.ones(12)[2:])        # an owner nothing else holds


def test_size_classes_round_up_by_at_most_a_quarter():
    for nbytes in [1, 7, 1 << 20, (1 << 20) + 1, 3 << 20, 5_000_001, 8 << 20, 123_456_789]:
        size = buffers.size_class(nbytes)
        assert nbytes <= size <= nbytes * 1.25 + 1
    assert buffers.size_class(8 << 20) == 8 << 20
    assert buffers.size_class((8 << 20) + 1) == 10 << 20


def test_empty_cache_gives_back_free_blocks_only():
    buffers.empty_cache()
    live = buffers.empty(BIG, np.float32)
    freed = buffers.empty((3, 512, 1024), np.float32)
    del freed
    before = buffers.stats()
    buffers.empty_cache()
    after = buffers.stats()
    assert after["held_bytes"] == before["held_bytes"] - buffers.size_class(3 << 21)
    assert after["in_use_bytes"] == buffers.size_class(live.nbytes)


def test_blocks_unused_for_long_are_let_go_at_the_next_new_block():
    buffers.empty_cache()
    old = buffers.empty((5, 512, 1024), np.float32)         # 10 MB, then unused
    del old
    for _ in range(buffers.STALE_AFTER + 1):
        buffers.empty(BIG, np.float32)                       # reuses one block
    held = buffers.stats()["held_bytes"]
    buffers.empty((3, 512, 1024), np.float32)                # a new block: the 10 MB go
    assert buffers.stats()["held_bytes"] == held - (10 << 20) + (6 << 20)


def test_disabled_cache_is_numpy():
    buffers.enable(False)
    a = buffers.empty(BIG, np.float32)
    assert a.flags.owndata and buffers.enable(True) is False


def test_threads_never_get_the_same_block():
    errors = []

    def work(value):
        for _ in range(50):
            a = buffers.empty(BIG, np.float32)
            a[...] = value
            b = buffers.empty(BIG, np.float32)
            b[...] = -value
            if not ((a == value).all() and (b == -value).all()):
                errors.append(value)

    threads = [threading.Thread(target=work, args=(v,)) for v in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def resnet20_training(batch):
    """A training step of resnet20 (SGD with momentum) on a fixed random batch, seeded:
    (the model, a function that runs one step and returns its loss)."""
    tinyres.manual_seed(0)
    model = tinyres.models.get_model("resnet20")
    opt = tinyres.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    x = tinyres.tensor(rng.standard_normal((batch, 3, 32, 32), dtype=np.float32))
    y = tinyres.tensor(rng.integers(0, 10, batch))

    def step():
        opt.zero_grad()
        loss = tinyres.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return model, step


def _train_steps(steps):
    model, step = resnet20_training(32)
    held = []
    for _ in range(steps):
        loss = step()
        held.append(buffers.stats()["held_bytes"])
    return [p.detach().numpy().copy() for p in model.parameters()], loss.item(), held


def test_training_gives_the_same_numbers_with_and_without_the_cache():
    # resnet20 at batch 32: its 16-channel activations are 2 MB, from the cache
    with_cache, loss, held = _train_steps(4)
    assert held[-1] == held[1] > 0           # the second step on reuses the first's blocks
    buffers.enable(False)
    without, loss_plain, _ = _train_steps(4)
    assert loss == loss_plain
    for a, b in zip(with_cache, without):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("value, dtype", [(0, np.float32), (1.7, np.int32), (-2.5, np.float64),
                                          (np.nan, np.float32), (True, np.float32)])
def test_backend_full_is_np_full_and_its_large_arrays_come_from_blocks(value, dtype):
    from tinyres.backend import full
    for shape in [(3, 4), BIG]:
        a = full(np, shape, value, dtype)
        np.testing.assert_array_equal(a, np.full(shape, value, dtype=dtype))
        assert a.dtype == np.dtype(dtype) and a.shape == shape
        assert (a.base is not None and a.base.dtype == np.uint8) == (a.nbytes >= buffers.MIN_BYTES)
    row = np.arange(BIG[1], dtype=np.float64) / 3           # an array, broadcast and cast
    np.testing.assert_array_equal(full(np, BIG, row, np.float32),
                                  np.broadcast_to(row, BIG).astype(np.float32))


def test_padding_indexing_and_the_mean_reuse_blocks_from_step_to_step():
    # the plain-NumPy ops of resnet20's option-A shortcut and its head: ConstantPad's
    # output (4 MB), Mean's gradient (4 MB) and GetItem's (8 MB) are cache blocks, each
    # step after the first served by the blocks the step before gave back
    x = tinyres.randn(64, 16, 32, 32, requires_grad=True)
    counts = []
    for _ in range(3):
        before = buffers.stats()
        y = tinyres.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
        assert y.numpy().base is not None and y.numpy().base.dtype == np.uint8
        y.mean().backward()
        after = buffers.stats()
        counts.append((after["requests"] - before["requests"], after["hits"] - before["hits"]))
        expected = np.zeros((64, 16, 32, 32), np.float32)
        expected[:, :, ::2, ::2] = 1 / y.numel()
        np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6)
        x.grad = None
        del y
    assert counts[1][0] >= 3 and counts[1] == counts[2] == (counts[1][0], counts[1][0])


FAULTS_PROBE = """
import resource, sys
sys.path.insert(0, {tests!r})
from test_buffers import resnet20_training
_, step = resnet20_training(4)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc, Linux's counts")
def test_small_batch_training_steps_take_no_page_faults_under_glibcs_defaults():
    # resnet20 at batch 4: its activations and the kernels' scratch are 16 KB to 1 MB.
    # Under glibc's default malloc (no MALLOC_* settings, tinyres.runtime.tune() not
    # called), arrays from 128 KB are mmapped and trimmed heap memory is given back, so
    # with the cache starting at 1 MB each step took some 800 page faults (2,700 at batch
    # 8, where the step ran 1.27x as long); from buffers.MIN_BYTES (64 KB) they are cache
    # blocks
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    probe = FAULTS_PROBE.format(tests=os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env=env)
    assert float(out.stdout.strip()) < 50, out.stdout
