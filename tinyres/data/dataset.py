"""Datasets: an indexable collection of (image, label) pairs, read a batch at a time.

A Dataset answers `len(ds)` and `ds[i]`. One that holds its samples in arrays also answers
`ds.get_batch(indices)` with whole NumPy batches, so that the DataLoader indexes the
arrays once per batch instead of looping over samples in Python:

    ds = ArrayDataset(images, labels, transform=Normalize(mean, std))
    x, y = ds.get_batch(np.array([4, 0, 7]))     # x: (3, C, H, W) float32, y: (3,) int64
"""
import numpy as np


class Dataset:
    """Base class: subclasses define __len__ and __getitem__ (one sample)."""

    def __len__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError


class ArrayDataset(Dataset):
    """Images (N, C, H, W) and labels (N,) held in NumPy arrays, like torch's
    TensorDataset. Images are read as float32 times `scale` (1/255 keeps uint8 pixels
    small in memory); `transform`, if given, maps that batch (n, C, H, W) to another."""

    def __init__(self, images, labels, transform=None, scale=1.0):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4:
            raise ValueError(f"ArrayDataset: images must be (N, C, H, W), got shape "
                             f"{images.shape}")
        if labels.shape != (len(images),):
            raise ValueError(f"ArrayDataset: {len(images)} images but labels of shape "
                             f"{labels.shape}")
        self.images = images
        self.labels = labels.astype(np.int64)
        self.transform = transform
        self.scale = scale

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        x, y = self.get_batch(np.array([index]))
        return x[0], y[0]

    def get_batch(self, indices):
        """The samples at `indices` (an int array) as (images float32, labels int64)."""
        x = self.images[indices].astype(np.float32, copy=False)
        if self.scale != 1.0:
            x = x * np.float32(self.scale)
        if self.transform is not None:
            x = self.transform(x)
        return np.ascontiguousarray(x, dtype=np.float32), self.labels[indices]

    @property
    def num_classes(self):
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __repr__(self):
        return (f"{type(self).__name__}(n={len(self)}, image_shape="
                f"{tuple(self.images.shape[1:])}, transform={self.transform!r})")


def split_indices(n, test_fraction=0.2, seed=0):
    """A fixed random split of range(n): (train indices, test indices), both sorted."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])
