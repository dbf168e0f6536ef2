"""tinyres.utils.data against torch.utils.data: the same code through both engines.

Collation (structure and dtypes), samplers (coverage, lengths, batches), random_split
sizes, the DataLoader's batches, lengths and argument errors, and workers: num_workers=2
gives the batches num_workers=0 gives, iterable datasets split by get_worker_info,
worker_init_fn, errors raised in a worker, persistent workers, a script's __main__ dataset
and a clean exit with an unfinished iterator.
"""
import collections
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyres
from tinyres.utils import data as tdata

torch = pytest.importorskip("torch")
from torch.utils import data as pdata  # noqa: E402

Point = collections.namedtuple("Point", "x y")


# ----- comparing a tinyres result with a torch one --------------------------------------
def assert_same(ours, theirs):
    """Same structure, and at every leaf the same values, dtype and shape (`theirs` from
    torch, or from tinyres when two tinyres runs are compared)."""
    if isinstance(theirs, tinyres.Tensor):
        theirs = to_torch(theirs)
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, tinyres.Tensor), type(ours)
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", ""), ours.dtype
        assert ours.shape == tuple(theirs.shape)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs) and list(ours) == list(theirs)
        for key in theirs:
            assert_same(ours[key], theirs[key])
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b)
    else:
        assert type(ours) is type(theirs) and ours == theirs


def to_torch(sample):
    """A sample with every tinyres Tensor replaced by a torch tensor (same values, dtype)."""
    if isinstance(sample, tinyres.Tensor):
        return torch.from_numpy(sample.numpy().copy())
    if isinstance(sample, tuple) and hasattr(sample, "_fields"):
        return type(sample)(*(to_torch(s) for s in sample))
    if isinstance(sample, (list, tuple)):
        return type(sample)(to_torch(s) for s in sample)
    if isinstance(sample, dict):
        return {k: to_torch(v) for k, v in sample.items()}
    return sample


def assert_same_error(fn_ours, fn_theirs):
    """Both raise the same exception class with the same message."""
    with pytest.raises(Exception) as theirs:
        fn_theirs()
    with pytest.raises(type(theirs.value)) as ours:
        fn_ours()
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)


# ----- default_collate / default_convert -------------------------------------------------
def _samples():
    rng = np.random.default_rng(0)
    return {
        "tensors float32": [tinyres.tensor(rng.random((2, 3)).astype(np.float32))
                            for _ in range(3)],
        "tensors int64": [tinyres.tensor([1, 2]), tinyres.tensor([3, 4])],
        "uint8 arrays": [rng.integers(0, 255, (4, 4, 3), dtype=np.uint8) for _ in range(2)],
        "float64 arrays": [rng.random(3) for _ in range(2)],
        "python floats": [0.5, 1.25, -2.0],
        "python ints": [1, 2, 3],
        "bools": [True, False],
        "numpy float32 scalars": [np.float32(1.5), np.float32(2.5)],
        "numpy int32 scalars": [np.int32(1), np.int32(7)],
        "strings": ["a", "bc"],
        "tuples": [(np.zeros(2, np.float32), 1, 0.5), (np.ones(2, np.float32), 0, 1.5)],
        "lists": [[1, 2.0], [3, 4.0]],
        "dicts": [{"image": np.zeros((2, 2), np.uint8), "label": 3, "w": 0.1},
                  {"image": np.ones((2, 2), np.uint8), "label": 4, "w": 0.2}],
        "namedtuples": [Point(1, 2.0), Point(3, 4.0)],
        "nested": [{"a": (1, [2.0, np.int64(3)])}, {"a": (4, [5.0, np.int64(6)])}],
        "float targets": [(np.zeros(3, np.float32), np.float32(0.25)),
                          (np.ones(3, np.float32), np.float32(0.75))],
    }


@pytest.mark.parametrize("name", list(_samples()))
def test_default_collate_matches_torch(name):
    batch = _samples()[name]
    assert_same(tdata.default_collate(batch), pdata.default_collate(to_torch(batch)))


@pytest.mark.parametrize("name", list(_samples()))
def test_default_convert_matches_torch(name):
    sample = _samples()[name][0]
    assert_same(tdata.default_convert(sample), pdata.default_convert(to_torch(sample)))


@given(shape=st.lists(st.integers(1, 4), max_size=3), n=st.integers(1, 5),
       dtype=st.sampled_from([np.uint8, np.int32, np.int64, np.float32, np.float64, np.bool_]))
def test_default_collate_stacks_arrays_of_any_shape_and_dtype(shape, n, dtype):
    batch = [np.arange(np.prod(shape, dtype=int)).reshape(shape).astype(dtype) + i % 2
             for i in range(n)]
    batch = [b.astype(dtype) for b in batch]
    assert_same(tdata.default_collate(batch), pdata.default_collate(batch))


@pytest.mark.parametrize("batch", [
    [object(), object()],
    [np.array(["a", "b"]), np.array(["c", "d"])],
    [[1, 2], [3]],
    [np.zeros(2), np.zeros(3)],
], ids=["object", "string array", "ragged lists", "ragged arrays"])
def test_default_collate_errors_match_torch(batch):
    with pytest.raises(Exception) as theirs:
        pdata.default_collate(batch)
    with pytest.raises(type(theirs.value)) as ours:
        tdata.default_collate(batch)
    if not isinstance(batch[0], np.ndarray) or batch[0].dtype.kind in "U":
        assert str(ours.value) == str(theirs.value)


# ----- samplers ----------------------------------------------------------------------------
@given(n=st.integers(1, 30), batch_size=st.integers(1, 8), drop_last=st.booleans())
def test_batch_sampler_over_sequential_matches_torch(n, batch_size, drop_last):
    ours = tdata.BatchSampler(tdata.SequentialSampler(range(n)), batch_size, drop_last)
    theirs = pdata.BatchSampler(pdata.SequentialSampler(range(n)), batch_size, drop_last)
    assert list(ours) == list(theirs)
    assert len(ours) == len(theirs)


@given(n=st.integers(1, 30), seed=st.integers(0, 2 ** 32 - 1))
def test_random_samplers_cover_each_index_once(n, seed):
    gen = tinyres.Generator().manual_seed(seed)
    order = list(tdata.RandomSampler(range(n), generator=gen))
    assert sorted(order) == list(range(n)) and len(tdata.RandomSampler(range(n))) == n
    subset = [i * 3 for i in range(n)]
    drawn = list(tdata.SubsetRandomSampler(subset, generator=gen))
    assert sorted(drawn) == subset and len(tdata.SubsetRandomSampler(subset)) == n


@pytest.mark.parametrize("replacement", [False, True])
def test_random_sampler_num_samples(replacement):
    gen = tinyres.Generator().manual_seed(3)
    order = list(tdata.RandomSampler(range(7), replacement, num_samples=23, generator=gen))
    assert len(order) == 23 == len(pdata.RandomSampler(range(7), replacement, num_samples=23))
    assert all(0 <= i < 7 for i in order)
    if not replacement:       # three whole permutations, then 2 more distinct indices
        assert np.bincount(order, minlength=7).tolist().count(4) == 2
        assert sorted(order[:7]) == list(range(7))


def test_samplers_follow_the_seed():
    tinyres.manual_seed(5)
    first = list(tdata.RandomSampler(range(50)))
    tinyres.manual_seed(5)
    assert list(tdata.RandomSampler(range(50))) == first
    again = list(tdata.RandomSampler(range(50), generator=tinyres.Generator().manual_seed(1)))
    assert again == list(tdata.RandomSampler(range(50),
                                             generator=tinyres.Generator().manual_seed(1)))
    assert again != list(tdata.RandomSampler(range(50),
                                             generator=tinyres.Generator().manual_seed(2)))


@pytest.mark.parametrize("make", [
    lambda d: d.RandomSampler(range(3), replacement=1),
    lambda d: d.RandomSampler(range(3), num_samples=0),
    lambda d: d.RandomSampler(range(3), num_samples=2.5),
    lambda d: d.BatchSampler(range(3), batch_size=0, drop_last=False),
    lambda d: d.BatchSampler(range(3), batch_size=True, drop_last=False),
    lambda d: d.BatchSampler(range(3), batch_size=2, drop_last=1),
    lambda d: d.WeightedRandomSampler([1.0, 2.0], num_samples=0),
    lambda d: len(d.Sampler()),
])
def test_sampler_errors_match_torch(make):
    assert_same_error(lambda: make(tdata), lambda: make(pdata))


def test_weighted_random_sampler_draws_only_weighted_indices():
    gen = tinyres.Generator().manual_seed(0)
    drawn = list(tdata.WeightedRandomSampler([0.0, 1.0, 0.0, 3.0], 200, generator=gen))
    assert len(drawn) == 200 and set(drawn) == {1, 3}
    assert 0.6 < drawn.count(3) / 200 < 0.9


# ----- datasets and random_split ------------------------------------------------------------
@pytest.mark.parametrize("lengths", [[3, 7], [0.5, 0.5], [0.33, 0.33, 0.34], [0.1, 0.9],
                                     [1.0], [0.25, 0.25, 0.25, 0.25]])
@pytest.mark.parametrize("n", [10, 11, 3])
def test_random_split_sizes_match_torch(lengths, n):
    if all(isinstance(x, int) for x in lengths) and sum(lengths) != n:
        assert_same_error(lambda: tdata.random_split(range(n), lengths),
                          lambda: pdata.random_split(range(n), lengths))
        return
    with warnings.catch_warnings(record=True):           # "Length of split ... is 0"
        ours = tdata.random_split(range(n), lengths, generator=tinyres.Generator().manual_seed(0))
        theirs = pdata.random_split(range(n), lengths)
    assert [len(s) for s in ours] == [len(s) for s in theirs]
    assert sorted(i for s in ours for i in s) == list(range(n))


def test_random_split_follows_its_generator():
    split = [list(s) for s in tdata.random_split(range(20), [0.5, 0.5],
                                                 generator=tinyres.Generator().manual_seed(4))]
    again = [list(s) for s in tdata.random_split(range(20), [0.5, 0.5],
                                                 generator=tinyres.Generator().manual_seed(4))]
    assert split == again and split[0] != list(range(10))
    assert_same_error(lambda: tdata.random_split(range(10), [0.5, 0.6]),
                      lambda: pdata.random_split(range(10), [0.5, 0.6]))


def test_tensor_subset_and_concat_datasets_match_torch():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = np.arange(6)
    ours = tdata.TensorDataset(tinyres.tensor(x), tinyres.tensor(y))
    theirs = pdata.TensorDataset(torch.tensor(x), torch.tensor(y))
    assert len(ours) == len(theirs) == 6
    assert_same(ours[4], theirs[4])
    sub_o, sub_t = tdata.Subset(ours, [5, 0, 2]), pdata.Subset(theirs, [5, 0, 2])
    assert_same([sub_o[i] for i in range(3)], [sub_t[i] for i in range(3)])
    cat_o, cat_t = tdata.ConcatDataset([ours, sub_o]), pdata.ConcatDataset([theirs, sub_t])
    assert len(cat_o) == len(cat_t) == 9
    assert_same([cat_o[i] for i in (0, 6, 8, -1, -9)], [cat_t[i] for i in (0, 6, 8, -1, -9)])
    assert len(ours + sub_o) == 9
    assert_same_error(lambda: tdata.TensorDataset(tinyres.zeros(2), tinyres.zeros(3)),
                      lambda: pdata.TensorDataset(torch.zeros(2), torch.zeros(3)))
    assert_same_error(lambda: cat_o[-10], lambda: cat_t[-10])


# ----- the DataLoader ------------------------------------------------------------------------
class Pairs:
    """A map-style dataset without a base class: (float32 image, int label, float weight)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full((2, 3), i, np.float32), i % 3, i / 4


@given(n=st.integers(1, 20), batch_size=st.integers(1, 7), drop_last=st.booleans())
def test_loader_batches_match_torch(n, batch_size, drop_last):
    ours = tdata.DataLoader(Pairs(n), batch_size=batch_size, drop_last=drop_last)
    theirs = pdata.DataLoader(Pairs(n), batch_size=batch_size, drop_last=drop_last)
    assert len(ours) == len(theirs)
    assert_same(list(ours), list(theirs))


def test_loader_options_match_torch():
    def run(d, ds):
        return [list(d.DataLoader(ds, batch_size=None)),
                list(d.DataLoader(ds, batch_sampler=[[3, 1], [0]])),
                list(d.DataLoader(ds, batch_size=2, sampler=[4, 2, 0])),
                list(d.DataLoader(ds, batch_size=3, collate_fn=lambda b: [s[1] for s in b]))]
    assert_same(run(tdata, Pairs(5)), run(pdata, Pairs(5)))
    x = np.arange(10, dtype=np.float64)
    ours = list(tdata.DataLoader(tdata.TensorDataset(tinyres.tensor(x)), batch_size=4))
    theirs = list(pdata.DataLoader(pdata.TensorDataset(torch.tensor(x)), batch_size=4))
    assert_same(ours, theirs)


@pytest.mark.parametrize("kwargs", [
    dict(sampler=[0, 1], shuffle=True),
    dict(batch_sampler=[[0]], batch_size=2),
    dict(batch_sampler=[[0]], shuffle=True),
    dict(batch_sampler=[[0]], sampler=[0]),
    dict(batch_sampler=[[0]], drop_last=True),
    dict(batch_size=None, drop_last=True),
    dict(num_workers=-1),
    dict(timeout=-1),
    dict(prefetch_factor=2),
    dict(persistent_workers=True),
    dict(num_workers=1, prefetch_factor=-1),
])
def test_loader_argument_conflicts_match_torch(kwargs):
    assert_same_error(lambda: tdata.DataLoader(Pairs(4), **kwargs),
                      lambda: pdata.DataLoader(Pairs(4), **kwargs))


class Stream(tdata.IterableDataset):
    """0..n-1, split between workers by get_worker_info (as torch's docs show)."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        info = tdata.get_worker_info()
        k, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(k, self.n, step))

    def __len__(self):
        return self.n


class TorchStream(pdata.IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        info = pdata.get_worker_info()
        k, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(k, self.n, step))

    def __len__(self):
        return self.n


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("drop_last", [False, True])
def test_iterable_dataset_matches_torch(num_workers, drop_last):
    ours = tdata.DataLoader(Stream(11), batch_size=3, num_workers=num_workers,
                            drop_last=drop_last)
    theirs = pdata.DataLoader(TorchStream(11), batch_size=3, num_workers=num_workers,
                              drop_last=drop_last)
    assert len(ours) == len(theirs)
    assert_same(list(ours), list(theirs))
    assert_same_error(lambda: tdata.DataLoader(Stream(3), shuffle=True),
                      lambda: pdata.DataLoader(TorchStream(3), shuffle=True))


def test_loader_attributes_are_frozen_as_in_torch():
    assert_same_error(lambda: setattr(tdata.DataLoader(Pairs(3)), "batch_size", 2),
                      lambda: setattr(pdata.DataLoader(Pairs(3)), "batch_size", 2))


def _labels(loader):
    return [y.tolist() for _, y, _ in loader]


def test_shuffle_follows_manual_seed_and_generator():
    tinyres.manual_seed(0)
    first = _labels(tdata.DataLoader(Pairs(30), batch_size=4, shuffle=True))
    tinyres.manual_seed(0)
    assert _labels(tdata.DataLoader(Pairs(30), batch_size=4, shuffle=True)) == first
    loader = tdata.DataLoader(Pairs(30), batch_size=30, shuffle=True,
                              generator=tinyres.Generator().manual_seed(7))
    epoch1, epoch2 = _labels(loader), _labels(loader)
    assert epoch1 != epoch2                       # a new order each epoch
    again = tdata.DataLoader(Pairs(30), batch_size=30, shuffle=True,
                             generator=tinyres.Generator().manual_seed(7))
    assert _labels(again) == epoch1 and _labels(again) == epoch2


def test_generator_is_torch_shaped():
    g = tinyres.Generator()
    assert g.initial_seed() == torch.Generator().initial_seed()
    assert g.manual_seed(3) is g and g.initial_seed() == 3
    state = g.get_state()
    a = tinyres.random.permutation(10, g)
    g.set_state(state)
    assert (tinyres.random.permutation(10, g) == a).all()


# ----- workers -------------------------------------------------------------------------------
class Seen(tdata.Dataset):
    """Each sample says which worker built it and draws one number from tinyres's stream."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        info = tdata.get_worker_info()
        return i, -1 if info is None else info.id, np.random.random_sample()


def test_two_workers_give_the_batches_of_zero():
    def epoch(num_workers, **kw):
        loader = tdata.DataLoader(Pairs(23), batch_size=4, shuffle=True, num_workers=num_workers,
                                  generator=tinyres.Generator().manual_seed(11), **kw)
        return list(loader), len(loader)
    zero = epoch(0)
    assert_same(epoch(2), zero)
    assert_same(epoch(2, prefetch_factor=1, persistent_workers=True), zero)
    tinyres.manual_seed(1)
    a = list(tdata.DataLoader(Pairs(9), batch_size=2, shuffle=True))
    tinyres.manual_seed(1)
    assert_same(list(tdata.DataLoader(Pairs(9), batch_size=2, shuffle=True, num_workers=2)), a)


def test_workers_are_seeded_and_initialised_per_worker():
    loader = tdata.DataLoader(Seen(), batch_size=3, num_workers=2,
                              generator=tinyres.Generator().manual_seed(0))
    idx, worker, draw = zip(*[(i.tolist(), w.tolist(), r.tolist()) for i, w, r in loader])
    assert sum(idx, []) == list(range(12))
    assert [w[0] for w in worker] == [0, 1, 0, 1]              # round-robin, one batch each
    again = [r.tolist() for _, _, r in tdata.DataLoader(
        Seen(), batch_size=3, num_workers=2, generator=tinyres.Generator().manual_seed(0))]
    assert list(draw) == again
    assert len(set(np.round(sum(again, []), 12))) == 12        # the workers' streams differ


def _write_worker_id(worker_id):
    np.random.seed(1000 + worker_id)


def test_worker_init_fn_runs_in_each_worker():
    loader = tdata.DataLoader(Seen(), batch_size=6, num_workers=2,
                              worker_init_fn=_write_worker_id)
    first_draws = [r.tolist()[0] for _, _, r in loader]
    expected = [np.random.RandomState(1000 + k).random_sample() for k in (0, 1)]
    np.testing.assert_allclose(first_draws, expected)


class Faulty(tdata.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        if i == 4:
            raise ValueError(f"bad sample {i}")
        return i


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_worker_error_reaches_the_caller(num_workers):
    loader = tdata.DataLoader(Faulty(), batch_size=2, num_workers=num_workers)
    with pytest.raises(ValueError, match="bad sample 4") as err:
        list(loader)
    if num_workers:
        assert "Caught ValueError in DataLoader worker process 0" in str(err.value)
        persistent = tdata.DataLoader(Faulty(), batch_size=2, num_workers=num_workers,
                                      persistent_workers=True)
        for _ in range(2):                  # the failed epoch's workers are replaced
            with pytest.raises(ValueError, match="bad sample 4"):
                list(persistent)


def test_persistent_workers_serve_several_epochs_even_after_a_break():
    loader = tdata.DataLoader(Pairs(10), batch_size=3, num_workers=2, persistent_workers=True)
    for batch in loader:
        break
    expected = list(tdata.DataLoader(Pairs(10), batch_size=3))
    assert_same(list(loader), expected)
    assert_same(list(loader), expected)
    workers = loader._iterator._workers
    assert all(w.is_alive() for w in workers)
    loader._iterator._shutdown_workers()
    assert not any(w.is_alive() for w in workers)


SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tinyres as torch
    from torch.utils.data import DataLoader, Dataset

    class Squares(Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return np.float32(i * i), i

    if __name__ == "__main__":
        ctx = sys.argv[1] if len(sys.argv) > 1 else None
        loader = DataLoader(Squares(), batch_size=4, num_workers=2,
                            multiprocessing_context=ctx)
        print([x.tolist() for x, _ in loader])
        unfinished = iter(DataLoader(Squares(), batch_size=1, num_workers=2))
        next(unfinished)                      # left open: the program must still exit
        persistent = DataLoader(Squares(), batch_size=2, num_workers=2,
                                persistent_workers=True)
        assert len(list(persistent)) == 5
        next(iter(persistent))                # (and so are persistent workers)
""")


def test_a_scripts_main_dataset_works_with_workers_and_exits(tmp_path):
    """(Run with the argument "spawn" the script works too; it takes 20 s, so CI runs fork,
    the default.)"""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, PYTHONWARNINGS="error"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str([[0.0, 1.0, 4.0, 9.0], [16.0, 25.0, 36.0, 49.0],
                                       [64.0, 81.0]])


def test_torch_spelling():
    assert tinyres.utils.data.DataLoader is tdata.DataLoader
    from tinyres.utils.data import DataLoader, Dataset, TensorDataset  # noqa: F401
    assert issubclass(TensorDataset, Dataset)


class Slow(tdata.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        import time
        time.sleep(1.0)
        return i


class Dies(tdata.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        os._exit(3)


def test_timeout_and_a_dead_worker_raise(monkeypatch):
    with pytest.raises(RuntimeError, match=r"^DataLoader timed out after 0.2 seconds$"):
        list(tdata.DataLoader(Slow(), num_workers=1, timeout=0.2))
    monkeypatch.setattr("tinyres.utils.data.multiprocess.WATCH_SECONDS", 0.2)
    with pytest.raises(RuntimeError, match=r"DataLoader worker \(pid\(s\) \d+.*\) exited "
                                           r"unexpectedly"):
        list(tdata.DataLoader(Dies(), num_workers=2))


@given(n=st.integers(0, 40), weights=st.lists(st.integers(1, 9), min_size=1, max_size=4))
def test_random_split_fractions_match_torch(n, weights):
    fractions = [w / sum(weights) for w in weights]
    with warnings.catch_warnings(record=True):
        try:
            theirs = [len(s) for s in pdata.random_split(range(n), fractions)]
        except ValueError as err:
            with pytest.raises(ValueError, match=str(err)):
                tdata.random_split(range(n), fractions)
            return
        ours = tdata.random_split(range(n), fractions)
    assert [len(s) for s in ours] == theirs
    assert sorted(i for s in ours for i in s) == list(range(n))


def test_chain_dataset_matches_torch():
    ours = list(tdata.ChainDataset([Stream(3), Stream(2)]))
    theirs = list(pdata.ChainDataset([TorchStream(3), TorchStream(2)]))
    assert ours == theirs and list(Stream(2) + Stream(1)) == [0, 1, 0]
    assert len(tdata.ChainDataset([Stream(3), Stream(2)])) == 5
