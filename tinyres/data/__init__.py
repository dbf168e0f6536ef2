"""tinyres.data: datasets, the DataLoader and batch transforms (NumPy in, Tensors out).

    from tinyres.data import ArrayDataset, DataLoader, load_digits, to_rgb
    images, labels = load_digits()
    loader = DataLoader(ArrayDataset(to_rgb(images), labels), batch_size=64, shuffle=True,
                        seed=0)

This is the training job's fast path: whole NumPy batches, a loader whose shuffle order
is part of a checkpoint. The PyTorch-shaped API (Dataset, DataLoader with samplers,
collate_fn and workers) is tinyres.utils.data; torchvision's datasets and per-image
transforms are tinyres.vision.
"""
from tinyres.data.dataset import ArrayDataset, Dataset, split_indices
from tinyres.data.datasets import (CIFAR10, default_cache_dir, load_digits, load_mnist_subset,
                                   read_cifar_batch, synthetic)
from tinyres.data.loader import DataLoader
from tinyres.data.transforms import (Compose, Normalize, RandomCrop, RandomHorizontalFlip,
                                     RandomTransform, channel_stats, to_rgb, upsample)

__all__ = ["ArrayDataset", "CIFAR10", "Compose", "DataLoader", "Dataset", "Normalize",
           "RandomCrop", "RandomHorizontalFlip", "RandomTransform", "channel_stats",
           "default_cache_dir", "load_digits", "load_mnist_subset", "read_cifar_batch",
           "split_indices", "synthetic", "to_rgb", "upsample"]
