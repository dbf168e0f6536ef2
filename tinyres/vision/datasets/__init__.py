"""tinyres.vision.datasets: image datasets as torchvision.datasets has them, read from local
files (nothing is downloaded), and writers that make those files from arrays.

    from tinyres.vision import datasets, transforms
    train = datasets.CIFAR10("data", train=True, transform=transforms.ToTensor())

Images come out as uint8 NumPy arrays, (H, W) or (H, W, C), where torchvision gives PIL
images; tinyres.vision.transforms accepts them.
"""
from tinyres.vision.datasets.cifar import CIFAR10, CIFAR100, write_cifar10
from tinyres.vision.datasets.fakedata import FakeData
from tinyres.vision.datasets.folder import ImageFolder
from tinyres.vision.datasets.mnist import MNIST, FashionMNIST, read_idx, write_mnist
from tinyres.vision.datasets.vision import VisionDataset

__all__ = ["CIFAR10", "CIFAR100", "FakeData", "FashionMNIST", "ImageFolder", "MNIST",
           "VisionDataset", "read_idx", "write_cifar10", "write_mnist"]
