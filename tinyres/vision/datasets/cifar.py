"""CIFAR-10 and CIFAR-100 from the python batches in torchvision's layout, and a writer.

    root/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta
    root/cifar-100-python/train, test, meta

Each batch is a pickled dict ('data': uint8 (N, 3072), 'labels' or 'fine_labels': ints),
read with a restricted unpickler (tinyres.data.safe_pickle) that builds only containers
and NumPy arrays. A sample is (image uint8 (32, 32, 3) NumPy array, int label), where
torchvision gives a PIL RGB image; `data` is the uint8 (N, 32, 32, 3) array and `targets`
a list of ints, as there.
"""
import os
import pickle

import numpy as np

from tinyres.data.datasets import load_pickled_dict
from tinyres.vision.datasets.vision import VisionDataset, require_files


class CIFAR10(VisionDataset):
    """CIFAR-10: 50000 training / 10000 test colour images of 10 classes."""

    base_folder = "cifar-10-batches-py"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    train_list = [f"data_batch_{i}" for i in range(1, 6)]
    test_list = ["test_batch"]
    meta = {"filename": "batches.meta", "key": "label_names"}
    labels_key = "labels"

    def __init__(self, root, train=True, transform=None, target_transform=None,
                 download=False):
        super().__init__(root, transform=transform, target_transform=target_transform)
        self.train = train
        folder = os.path.join(self.root, self.base_folder)
        names = self.train_list if train else self.test_list
        require_files(type(self).__name__, folder, names + [self.meta["filename"]],
                      self.url, download)
        data, self.targets = [], []
        for name in names:
            entry = load_pickled_dict(os.path.join(folder, name), type(self).__name__)
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            self.targets.extend(int(t) for t in entry[self.labels_key])
        self.data = np.concatenate(data).transpose(0, 2, 3, 1)     # to HWC
        meta = load_pickled_dict(os.path.join(folder, self.meta["filename"]),
                                 type(self).__name__)
        self.classes = [str(c) for c in meta[self.meta["key"]]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def __getitem__(self, index):
        return self._apply_transforms(self.data[index], self.targets[index])

    def __len__(self):
        return len(self.data)

    def extra_repr(self):
        return f"Split: {'Train' if self.train is True else 'Test'}"


class CIFAR100(CIFAR10):
    """CIFAR-100: the same images' format, 100 fine classes ('fine_labels')."""

    base_folder = "cifar-100-python"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    train_list = ["train"]
    test_list = ["test"]
    meta = {"filename": "meta", "key": "fine_label_names"}
    labels_key = "fine_labels"


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


def write_cifar10(root, images, labels, train=True):
    """Write uint8 `images` (N, 32, 32, 3) and int `labels` (N,) as CIFAR-10's python
    batches under root/cifar-10-batches-py/: data_batch_1..5 (the images split evenly) or
    test_batch, plus batches.meta, in the pickle format (protocol 2) the archive uses."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ValueError(f"write_cifar10: images must be uint8 (N, 32, 32, 3), got "
                         f"{images.dtype} {images.shape}")
    if labels.shape != (len(images),) or (len(labels) and not 0 <= labels.min()
                                          <= labels.max() <= 9):
        raise ValueError(f"write_cifar10: labels must be {len(images)} ints in 0..9, got "
                         f"shape {labels.shape}")
    folder = os.path.join(os.path.expanduser(os.fspath(root)), CIFAR10.base_folder)
    os.makedirs(folder, exist_ok=True)
    names = CIFAR10.train_list if train else CIFAR10.test_list
    flat = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    for name, part in zip(names, np.array_split(np.arange(len(images)), len(names))):
        write_batch(os.path.join(folder, name), {
            "batch_label": f"{name} written by write_cifar10",
            "labels": [int(y) for y in labels[part]],
            "data": np.ascontiguousarray(flat[part]),
            "filenames": [f"image_{i}.png" for i in part]})
    write_batch(os.path.join(folder, CIFAR10.meta["filename"]), {
        "num_cases_per_batch": len(images) // len(names), "label_names": CIFAR10_CLASSES,
        "num_vis": 3072})
    return folder


def write_batch(path, entry):
    """Pickle one dict with protocol 2, as the CIFAR archives are."""
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)
