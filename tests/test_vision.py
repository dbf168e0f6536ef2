"""tinyres.vision: the dataset readers on files written in the real formats, and the
transforms, against torch (and torchvision where it imports).

The files come from scikit-learn's bundled digits, upscaled to 28x28 (MNIST) and 32x32 RGB
(CIFAR), written by write_mnist / write_cifar10 in torchvision's folder layout.
"""
import gzip
import os
import pickle
import shutil
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyres
from tinyres.data import load_digits
from tinyres.utils.data import DataLoader
from tinyres.vision import datasets, transforms as T

torch = pytest.importorskip("torch")


def _torchvision():
    try:
        import torchvision
        return torchvision
    except Exception:          # missing, or built for another torch (its C ops fail to load)
        return None


tv = _torchvision()
needs_torchvision = pytest.mark.skipif(tv is None, reason="torchvision does not import")


def digit_images(n, size, rgb):
    """n digits as uint8 images (n, size, size[, 3]) and their labels."""
    images, labels = load_digits()
    x = np.repeat(np.repeat(images[:n, 0], size // 8, axis=1), size // 8, axis=2)
    pad = (size - x.shape[1]) // 2
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    x = np.round(x * 255).astype(np.uint8)
    if rgb:
        x = np.stack([x, 255 - x, x // 2], axis=-1)
    return x, labels[:n]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A data folder holding MNIST (train 40, test 10) and CIFAR-10 (train 23, test 7)."""
    root = tmp_path_factory.mktemp("data")
    images, labels = digit_images(50, 28, rgb=False)
    datasets.write_mnist(root, images[:40], labels[:40], train=True)
    datasets.write_mnist(root, images[40:], labels[40:], train=False)
    images, labels = digit_images(30, 32, rgb=True)
    datasets.write_cifar10(root, images[:23], labels[:23], train=True)
    datasets.write_cifar10(root, images[23:], labels[23:], train=False)
    return root


# ----- MNIST -------------------------------------------------------------------------------
def test_write_mnist_makes_torchvisions_layout(root):
    raw = root / "MNIST" / "raw"
    assert sorted(os.listdir(raw)) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                                       "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    header = (raw / "train-images-idx3-ubyte").read_bytes()[:16]
    assert header == bytes([0, 0, 8, 3]) + np.array([40, 28, 28], ">i4").tobytes()
    assert (raw / "train-labels-idx1-ubyte").stat().st_size == 8 + 40


@pytest.mark.parametrize("train", [True, False])
def test_mnist_reads_back_what_was_written(root, train):
    images, labels = digit_images(50, 28, rgb=False)
    part = slice(0, 40) if train else slice(40, 50)
    ds = datasets.MNIST(root, train=train)
    assert len(ds) == len(labels[part])
    img, label = ds[3]
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == (28, 28)
    assert (img == images[part][3]).all() and label == labels[part][3]
    assert isinstance(label, int)
    assert ds.data.dtype == np.uint8 and ds.targets.dtype == np.int64
    assert ds.class_to_idx["3 - three"] == 3


def test_mnist_reads_gzipped_files_and_fashion_mnist(tmp_path, root):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(raw / (name + ".gz"), "wb") as g:
            g.write((root / "MNIST" / "raw" / name).read_bytes())
    fashion = datasets.FashionMNIST(tmp_path, train=False, transform=T.ToTensor(),
                                    target_transform=lambda y: y + 100)
    mnist = datasets.MNIST(root, train=False)
    x, y = fashion[2]
    assert x.shape == (1, 28, 28) and x.dtype == np.float32 and y == mnist[2][1] + 100
    np.testing.assert_allclose(x.numpy()[0], mnist[2][0] / np.float32(255), rtol=1e-6)
    assert fashion.classes[9] == "Ankle boot"


def test_missing_files_raise_a_clear_error(tmp_path, root):
    for download in (False, True):
        with pytest.raises(RuntimeError) as err:
            datasets.MNIST(tmp_path, train=True, download=download)
        message = str(err.value)
        assert "train-images-idx3-ubyte" in message and str(tmp_path / "MNIST" / "raw") in message
        assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in message
    with pytest.raises(RuntimeError, match="cifar-10-python.tar.gz"):
        datasets.CIFAR10(tmp_path, download=True)
    assert len(datasets.MNIST(root, download=True)) == 40     # present: nothing to fetch
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")
    (tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(ValueError, match="not an idx file"):
        datasets.MNIST(tmp_path)


def test_writers_check_their_input(tmp_path):
    with pytest.raises(ValueError, match=r"uint8 \(N, 28, 28\)"):
        datasets.write_mnist(tmp_path, np.zeros((2, 28, 28), np.float32), [0, 1])
    with pytest.raises(ValueError, match="labels"):
        datasets.write_cifar10(tmp_path, np.zeros((2, 32, 32, 3), np.uint8), [0, 10])


# ----- CIFAR ---------------------------------------------------------------------------------
def test_write_cifar10_makes_the_archives_python_batches(root):
    folder = root / "cifar-10-batches-py"
    assert sorted(os.listdir(folder)) == ["batches.meta"] + [f"data_batch_{i}" for i in
                                                             range(1, 6)] + ["test_batch"]
    sizes = []
    for i in range(1, 6):        # read as torchvision does: pickle, latin1, str keys
        with open(folder / f"data_batch_{i}", "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        assert entry["data"].dtype == np.uint8 and entry["data"].shape[1] == 3072
        sizes.append(len(entry["labels"]))
    assert sizes == [5, 5, 5, 4, 4]
    with open(folder / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="latin1")["label_names"][0] == "airplane"


@pytest.mark.parametrize("train", [True, False])
def test_cifar10_reads_back_what_was_written(root, train):
    images, labels = digit_images(30, 32, rgb=True)
    part = slice(0, 23) if train else slice(23, 30)
    ds = datasets.CIFAR10(root, train=train)
    assert len(ds) == len(labels[part]) and ds.data.shape == (len(ds), 32, 32, 3)
    assert (ds.data == images[part]).all() and ds.targets == labels[part].tolist()
    img, label = ds[len(ds) - 1]
    assert img.dtype == np.uint8 and (img == images[part][-1]).all() and label == labels[part][-1]
    assert ds.classes[9] == "truck" and ds.class_to_idx["ship"] == 8


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images, labels = digit_images(6, 32, rgb=True)
    flat = images.transpose(0, 3, 1, 2).reshape(6, 3072)
    for name, part in (("train", slice(0, 4)), ("test", slice(4, 6))):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": flat[part], "fine_labels": (labels[part] * 7).tolist(),
                         "coarse_labels": labels[part].tolist()}, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f, protocol=2)
    ds = datasets.CIFAR100(tmp_path, train=False)
    assert len(ds) == 2 and (ds[1][0] == images[5]).all() and ds[1][1] == labels[5] * 7
    assert ds.classes[99] == "c99"


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_the_cifar_reader_refuses_arbitrary_objects(tmp_path, root, monkeypatch):
    shutil.copytree(root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Exploit(), "labels": [0]}, f, protocol=2)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="refusing to load global .*system"):
        datasets.CIFAR10(tmp_path, train=False)
    assert not (tmp_path / "PWNED").exists()


@needs_torchvision
def test_readers_equal_torchvisions(root):
    for train in (True, False):
        ours, theirs = datasets.MNIST(root, train=train), tv.datasets.MNIST(root, train=train)
        assert len(ours) == len(theirs)
        for i in range(len(ours)):
            assert (ours[i][0] == np.asarray(theirs[i][0])).all() and ours[i][1] == theirs[i][1]
        with mock.patch("torchvision.datasets.cifar.check_integrity", return_value=True), \
                mock.patch.object(tv.datasets.CIFAR10, "_check_integrity", return_value=True):
            theirs = tv.datasets.CIFAR10(root, train=train)        # (md5s are the archive's)
        ours = datasets.CIFAR10(root, train=train)
        assert (ours.data == theirs.data).all() and ours.targets == theirs.targets
        assert ours.classes == theirs.classes
        assert all((ours[i][0] == np.asarray(theirs[i][0])).all() for i in range(len(ours)))


def test_fake_data():
    ds = datasets.FakeData(size=5, image_size=(3, 6, 4), num_classes=3, transform=T.ToTensor())
    x, y = ds[2]
    assert len(ds) == 5 and x.shape == (3, 6, 4) and x.dtype == np.float32 and 0 <= y < 3
    assert (ds[2][0].numpy() == x.numpy()).all() and ds[2][1] == y
    assert not (ds[3][0].numpy() == x.numpy()).all()
    with pytest.raises(IndexError):
        ds[5]


def test_a_cifar_pipeline_through_the_dataloader(root):
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))])
    ds = datasets.CIFAR10(root, train=True, transform=train_tf)
    batches = []
    for workers in (0, 2):
        tinyres.manual_seed(0)
        loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=workers)
        batches.append([(x, y) for x, y in loader])
    for x, y in batches[0]:
        assert x.dtype == np.float32 and x.shape[1:] == (3, 32, 32) and y.dtype == np.int64
    assert [y.tolist() for _, y in batches[0]] == [y.tolist() for _, y in batches[1]]
    tinyres.manual_seed(0)
    again = [x for x, _ in DataLoader(ds, batch_size=8, shuffle=True)]
    assert all((a.numpy() == b.numpy()).all() for a, (b, _) in zip(again, batches[0]))


# ----- transforms ------------------------------------------------------------------------------
IMAGE = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)


def as_torch_chw(img):
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255


def test_to_tensor_and_normalize_match_torch():
    x = T.ToTensor()(IMAGE)
    expected = as_torch_chw(IMAGE)
    assert x.dtype == np.float32 and x.shape == tuple(expected.shape)
    np.testing.assert_allclose(x.numpy(), expected.numpy(), rtol=1e-6)
    gray = T.ToTensor()(IMAGE[:, :, 0])
    assert gray.shape == (1, 9, 13)
    kept = T.ToTensor()(IMAGE.astype(np.float64))              # not uint8: no scaling
    assert kept.dtype == np.float64 and kept.numpy().max() == IMAGE.max()
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    ours = T.Normalize(mean, std)(x)
    theirs = (expected - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


@pytest.mark.parametrize("call, error", [
    (lambda: T.Normalize((0.5,), (0.5,))(IMAGE), TypeError),
    (lambda: T.Normalize((0.5,), (0.5,))(tinyres.tensor(IMAGE)), TypeError),
    (lambda: T.Normalize((0.5,), (0.5,))(tinyres.zeros(4, 4)), ValueError),
    (lambda: T.Normalize((0.5,), (0.0,))(tinyres.zeros(1, 4, 4)), ValueError),
    (lambda: T.ToTensor()([1, 2]), TypeError),
    (lambda: T.Pad(1, padding_mode="wrap"), ValueError),
    (lambda: T.Pad((1, 2, 3)), ValueError),
    (lambda: T.RandomCrop(20)(IMAGE), ValueError),
    (lambda: T.Lambda(3), TypeError),
])
def test_transform_errors(call, error):
    with pytest.raises(error):
        call()


@pytest.mark.parametrize("padding, mode", [(2, "constant"), ((1, 2), "reflect"),
                                           ((1, 2, 3, 0), "edge"), (3, "reflect")])
def test_pad_matches_torch(padding, mode):
    left, top, right, bottom = T._ltrb(padding)
    torch_mode = {"edge": "replicate"}.get(mode, mode)
    expected = torch.nn.functional.pad(as_torch_chw(IMAGE)[None], (left, right, top, bottom),
                                       mode=torch_mode)[0]
    tensor_out = T.Pad(padding, padding_mode=mode)(T.ToTensor()(IMAGE))
    np.testing.assert_allclose(tensor_out.numpy(), expected.numpy(), rtol=1e-6)
    array_out = T.Pad(padding, padding_mode=mode)(IMAGE)
    assert array_out.dtype == np.uint8
    np.testing.assert_allclose(T.ToTensor()(array_out).numpy(), expected.numpy(), rtol=1e-6)


def test_pad_symmetric_and_per_channel_fill():
    out = T.Pad((2, 1), padding_mode="symmetric")(IMAGE)
    assert (out[1:-1, 2:-2] == IMAGE).all() and (out[0] == out[1]).all()
    assert (out[:, 0] == out[:, 3]).all() and (out[:, 1] == out[:, 2]).all()
    filled = T.Pad(1, fill=(7, 8, 9))(IMAGE)
    assert (filled[0, 0] == [7, 8, 9]).all() and (filled[-1, 5] == [7, 8, 9]).all()
    with pytest.raises(TypeError):
        T.Pad(1, fill=(7, 8, 9))(T.ToTensor()(IMAGE))        # torchvision: numbers only


@pytest.mark.parametrize("size", [5, (4, 7), (15, 4), (20, 20)])
def test_center_crop(size):
    h, w = (size, size) if isinstance(size, int) else size
    out = T.CenterCrop(size)(IMAGE)
    assert out.shape == (h, w, 3)
    tensor_out = T.CenterCrop(size)(T.ToTensor()(IMAGE))
    np.testing.assert_allclose(tensor_out.numpy(), T.ToTensor()(out).numpy())
    if h <= 9 and w <= 13:
        top, left = int(round((9 - h) / 2)), int(round((13 - w) / 2))
        assert (out == IMAGE[top:top + h, left:left + w]).all()


def test_random_crop_is_a_window_of_the_padded_image():
    padded = np.pad(IMAGE, ((4, 4), (4, 4), (0, 0)))
    tinyres.manual_seed(3)
    crops = [T.RandomCrop((9, 13), padding=4)(IMAGE) for _ in range(20)]
    windows = {(i, j) for i in range(9) for j in range(9)
               if any((c == padded[i:i + 9, j:j + 13]).all() for c in crops)}
    assert len(windows) > 5                            # found, and at several places
    assert all(any((c == padded[i:i + 9, j:j + 13]).all() for i, j in windows) for c in crops)
    tinyres.manual_seed(3)
    assert all((T.RandomCrop((9, 13), padding=4)(IMAGE) == c).all() for c in crops)
    big = T.RandomCrop((12, 20), pad_if_needed=True, fill=5)(IMAGE)
    assert big.shape == (12, 20, 3)
    same = T.RandomCrop((9, 13))(T.ToTensor()(IMAGE))
    np.testing.assert_allclose(same.numpy(), T.ToTensor()(IMAGE).numpy())


def test_flips():
    assert (T.RandomHorizontalFlip(1.0)(IMAGE) == IMAGE[:, ::-1]).all()
    assert (T.RandomHorizontalFlip(0.0)(IMAGE) == IMAGE).all()
    assert (T.RandomVerticalFlip(1.0)(IMAGE) == IMAGE[::-1]).all()
    flipped = T.RandomHorizontalFlip(1.0)(T.ToTensor()(IMAGE))
    np.testing.assert_allclose(flipped.numpy(), as_torch_chw(IMAGE).flip(-1).numpy())
    tinyres.manual_seed(0)
    flips = [bool((T.RandomHorizontalFlip()(IMAGE) != IMAGE).any()) for _ in range(40)]
    assert 5 < sum(flips) < 35


@pytest.mark.parametrize("size", [(12, 20), 11, (5, 6), (3, 30)])
@pytest.mark.parametrize("mode, antialias", [("bilinear", True), ("bilinear", False),
                                             ("nearest", False)])
def test_resize_on_tensors_matches_interpolate(size, mode, antialias):
    x = as_torch_chw(IMAGE)
    out = T.Resize(size, interpolation=T.InterpolationMode(mode),
                   antialias=antialias)(T.ToTensor()(IMAGE))
    target = (size, int(size * 13 / 9)) if isinstance(size, int) else size
    kwargs = {} if mode == "nearest" else dict(align_corners=False, antialias=antialias)
    expected = torch.nn.functional.interpolate(x[None], size=target, mode=mode, **kwargs)[0]
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-6)
    assert T.Resize(size, interpolation=T.InterpolationMode(mode))(IMAGE).dtype == np.uint8


@needs_torchvision
def test_transforms_equal_torchvisions_on_the_same_images():
    from PIL import Image
    pil = Image.fromarray(IMAGE)
    pairs = [(T.CenterCrop(5), tv.transforms.CenterCrop(5)),
             (T.CenterCrop((15, 4)), tv.transforms.CenterCrop((15, 4))),
             (T.Pad((1, 2, 3, 4), fill=9), tv.transforms.Pad((1, 2, 3, 4), fill=9)),
             (T.Pad([3, 1], padding_mode="reflect"),
              tv.transforms.Pad([3, 1], padding_mode="reflect")),
             (T.Pad(3, padding_mode="symmetric"), tv.transforms.Pad(3, padding_mode="symmetric")),
             (T.RandomHorizontalFlip(1.0), tv.transforms.RandomHorizontalFlip(1.0)),
             (T.Resize((20, 30), interpolation=T.InterpolationMode.NEAREST),
              tv.transforms.Resize((20, 30),
                                   interpolation=tv.transforms.InterpolationMode.NEAREST))]
    for ours, theirs in pairs:
        assert (ours(IMAGE) == np.asarray(theirs(pil))).all(), ours
        np.testing.assert_allclose(ours(T.ToTensor()(IMAGE)).numpy(),
                                   theirs(tv.transforms.ToTensor()(pil)).numpy(), atol=1e-6)
    np.testing.assert_allclose(T.ToTensor()(IMAGE).numpy(),
                               tv.transforms.ToTensor()(pil).numpy())
    for size in [(20, 30), (5, 4), 7]:            # PIL works in fixed point: within 1
        ours, theirs = T.Resize(size)(IMAGE), np.asarray(tv.transforms.Resize(size)(pil))
        assert ours.shape == theirs.shape
        assert np.abs(ours.astype(int) - theirs).max() <= 1
        np.testing.assert_allclose(T.Resize(size)(T.ToTensor()(IMAGE)).numpy(),
                                   tv.transforms.Resize(size)(as_torch_chw(IMAGE)).numpy(),
                                   atol=1e-5)


def test_lambda_and_compose():
    tf = T.Compose([T.ToTensor(), T.Lambda(lambda t: t * 2)])
    np.testing.assert_allclose(tf(IMAGE).numpy(), 2 * as_torch_chw(IMAGE).numpy(), rtol=1e-6)
    assert "ToTensor()" in repr(tf)


def test_to_tensor_accepts_pil_images():
    image = pytest.importorskip("PIL.Image")
    np.testing.assert_allclose(T.ToTensor()(image.fromarray(IMAGE)).numpy(),
                               T.ToTensor()(IMAGE).numpy())
    assert T.ToTensor()(image.fromarray(IMAGE[:, :, 1])).shape == (1, 9, 13)


def _image_folder(tmp_path):
    image = pytest.importorskip("PIL.Image")
    images, labels = digit_images(6, 32, rgb=True)
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = tmp_path / ("odd" if label % 2 else "even")
        folder.mkdir(exist_ok=True)
        image.fromarray(img).save(folder / f"{i:02d}.png")
    (tmp_path / "even" / "notes.txt").write_text("not an image")
    return images, labels


def test_image_folder(tmp_path):
    images, labels = _image_folder(tmp_path)
    ds = datasets.ImageFolder(tmp_path, transform=T.ToTensor())
    assert ds.classes == ["even", "odd"] and len(ds) == 6
    order = sorted(range(6), key=lambda i: (labels[i] % 2, i))
    assert ds.targets == [int(labels[i] % 2) for i in order]
    x, y = ds[0]
    np.testing.assert_allclose(x.numpy(), T.ToTensor()(images[order[0]]).numpy())
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="Found no valid file for the classes empty"):
        datasets.ImageFolder(tmp_path)
    if tv is not None:
        theirs = tv.datasets.ImageFolder(tmp_path, allow_empty=True)
        ours = datasets.ImageFolder(tmp_path, allow_empty=True)
        assert ours.classes == theirs.classes and ours.targets == theirs.targets
        assert [p for p, _ in ours.samples] == [p for p, _ in theirs.samples]
        assert all((ours[i][0] == np.asarray(theirs[i][0])).all() for i in range(6))


@given(ltrb=st.lists(st.integers(0, 4), min_size=4, max_size=4),
       mode=st.sampled_from(["constant", "reflect", "edge"]))
def test_pad_matches_torch_for_any_padding(ltrb, mode):
    left, top, right, bottom = ltrb
    torch_mode = {"edge": "replicate"}.get(mode, mode)
    x = as_torch_chw(IMAGE)
    expected = torch.nn.functional.pad(x[None], (left, right, top, bottom), mode=torch_mode)[0]
    out = T.Pad(ltrb, padding_mode=mode)(T.ToTensor()(IMAGE))
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-6)
    assert T.Pad(ltrb, padding_mode=mode)(IMAGE).shape == (9 + top + bottom, 13 + left + right, 3)
