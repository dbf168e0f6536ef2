"""MNIST and FashionMNIST from idx files in torchvision's layout, and a writer for them.

    root/MNIST/raw/train-images-idx3-ubyte   (or .gz)   uint8 (60000, 28, 28)
    root/MNIST/raw/train-labels-idx1-ubyte   (or .gz)   uint8 (60000,)
    root/MNIST/raw/t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte   the test split

A sample is (image, label): the image a uint8 NumPy array (28, 28), where torchvision
gives a PIL image of mode "L" (ToTensor and the other transforms accept both shapes);
the label a Python int. `data` and `targets` are tensors (uint8 and int64), as there.
"""
import gzip
import os

import numpy as np

import tinyres
from tinyres.vision.datasets.vision import VisionDataset, require_files

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
              0x0E: ">f8"}


class MNIST(VisionDataset):
    """The MNIST digits (root/MNIST/raw/...); `train` picks the 60000 training images or
    the 10000 test images. Only the chosen split's two files need be present."""

    mirrors = ["https://ossci-datasets.s3.amazonaws.com/mnist/",
               "http://yann.lecun.com/exdb/mnist/"]
    classes = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five",
               "6 - six", "7 - seven", "8 - eight", "9 - nine"]

    def __init__(self, root, train=True, transform=None, target_transform=None,
                 download=False):
        super().__init__(root, transform=transform, target_transform=target_transform)
        self.train = train
        images, labels = split_files(train)
        require_files(type(self).__name__, self.raw_folder, [images, labels],
                      self.mirrors[0], download)
        self.data = tinyres.from_numpy(read_idx(os.path.join(self.raw_folder, images)))
        self.targets = tinyres.from_numpy(
            read_idx(os.path.join(self.raw_folder, labels)).astype(np.int64))

    @property
    def raw_folder(self):
        return os.path.join(self.root, type(self).__name__, "raw")

    @property
    def class_to_idx(self):
        return {c: i for i, c in enumerate(self.classes)}

    def __getitem__(self, index):
        img, target = self.data.array[index], int(self.targets.array[index])
        return self._apply_transforms(img, target)

    def __len__(self):
        return len(self.data.array)

    def extra_repr(self):
        return f"Split: {'Train' if self.train is True else 'Test'}"


class FashionMNIST(MNIST):
    """Zalando's clothing images, MNIST's format under root/FashionMNIST/raw/."""

    mirrors = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]


def split_files(train):
    """The (images, labels) idx file names of a split."""
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def read_idx(path):
    """An idx file (or its .gz when only that exists) as a NumPy array of its own shape."""
    if not os.path.isfile(path) and os.path.isfile(path + ".gz"):
        path = path + ".gz"
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"read_idx: {path!r} is not an idx file (bad magic number)")
    ndim, dtype = raw[3], np.dtype(IDX_DTYPES[raw[2]])
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"read_idx: {path!r} holds {len(raw)} bytes, expected {expected} "
                         f"for shape {shape}")
    data = np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path, array):
    """Write a uint8 array as an idx file (the format MNIST ships in)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    with open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_mnist(root, images, labels, train=True):
    """Write uint8 `images` (N, 28, 28) and int `labels` (N,) as MNIST's idx files under
    root/MNIST/raw/ (train-* or t10k-*), where MNIST(root, train=train) reads them."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"write_mnist: images must be uint8 (N, 28, 28), got "
                         f"{images.dtype} {images.shape}")
    if labels.shape != (len(images),) or (len(labels) and not 0 <= labels.min()
                                          <= labels.max() <= 255):
        raise ValueError(f"write_mnist: labels must be {len(images)} ints in 0..255, got "
                         f"shape {labels.shape}")
    folder = os.path.join(os.path.expanduser(os.fspath(root)), "MNIST", "raw")
    os.makedirs(folder, exist_ok=True)
    image_file, label_file = split_files(train)
    write_idx(os.path.join(folder, image_file), images)
    write_idx(os.path.join(folder, label_file), labels.astype(np.uint8))
    return folder
