"""ImageFolder: images sorted into one folder per class, as torchvision.datasets.ImageFolder.

    root/cat/001.png, root/cat/002.jpg, root/dog/xyz.png  ->  classes ["cat", "dog"]

Images are decoded with Pillow (needed only here) and returned as uint8 RGB NumPy arrays
(H, W, 3) where torchvision returns PIL images; pass `loader` to read other formats.
"""
import os

import numpy as np

from tinyres.vision.datasets.vision import VisionDataset

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def default_loader(path):
    """The image at `path` as a uint8 RGB array (H, W, 3)."""
    from PIL import Image
    with open(path, "rb") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def find_classes(directory):
    """(sorted class folder names, {name: index})."""
    classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    if not classes:
        raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
    return classes, {name: i for i, name in enumerate(classes)}


def make_dataset(directory, class_to_idx, extensions, is_valid_file, allow_empty=False):
    """[(path, class index)] for every valid file, classes in order, files sorted."""
    if is_valid_file is None:
        def is_valid_file(path):
            return path.lower().endswith(extensions)
    instances, empty = [], []
    for name in sorted(class_to_idx):
        found = [os.path.join(folder, f)
                 for folder, _, files in sorted(os.walk(os.path.join(directory, name),
                                                        followlinks=True))
                 for f in sorted(files) if is_valid_file(os.path.join(folder, f))]
        instances += [(path, class_to_idx[name]) for path in found]
        if not found:
            empty.append(name)
    if empty and not allow_empty:
        raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}. "
                                f"Supported extensions are: {', '.join(extensions)}")
    return instances


class ImageFolder(VisionDataset):
    """One sample per image file under root/<class>/, labelled by its class folder."""

    def __init__(self, root, transform=None, target_transform=None, loader=default_loader,
                 is_valid_file=None, allow_empty=False):
        super().__init__(root, transform=transform, target_transform=target_transform)
        self.classes, self.class_to_idx = find_classes(self.root)
        self.extensions = IMG_EXTENSIONS if is_valid_file is None else None
        self.samples = make_dataset(self.root, self.class_to_idx, IMG_EXTENSIONS,
                                    is_valid_file, allow_empty)
        self.imgs = self.samples
        self.targets = [target for _, target in self.samples]
        self.loader = loader

    def __getitem__(self, index):
        path, target = self.samples[index]
        return self._apply_transforms(self.loader(path), target)

    def __len__(self):
        return len(self.samples)
