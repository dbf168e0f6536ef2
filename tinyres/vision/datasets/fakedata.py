"""FakeData: random images of a fixed size, as torchvision.datasets.FakeData.

Sample i is drawn from a generator seeded with i + random_offset, so it is the same every
time it is read. The pixels are uniform uint8 (H, W, C) NumPy arrays (torchvision draws a
normal tensor and turns it into a PIL image: the values differ, the shapes and types of
the pipeline do not).
"""
import numpy as np

from tinyres.vision.datasets.vision import VisionDataset


class FakeData(VisionDataset):
    """`size` random images of `image_size` (C, H, W) with labels in [0, num_classes)."""

    def __init__(self, size=1000, image_size=(3, 224, 224), num_classes=10, transform=None,
                 target_transform=None, random_offset=0):
        super().__init__(None, transform=transform, target_transform=target_transform)
        self.size = size
        self.num_classes = num_classes
        self.image_size = image_size
        self.random_offset = random_offset

    def __getitem__(self, index):
        if index >= len(self):
            raise IndexError(f"{type(self).__name__} index out of range")
        rng = np.random.default_rng(index + self.random_offset)
        c, h, w = self.image_size
        img = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
        img = img[:, :, 0] if c == 1 else img
        target = int(rng.integers(0, self.num_classes))
        return self._apply_transforms(img, target)

    def __len__(self):
        return self.size
