"""A CNN on MNIST in the style of PyTorch's official MNIST example, with its own Dataset.

This is a PyTorch training script with its import lines changed to tinyres's and nothing
else: examples/README.md shows the diff, and tests/test_examples.py runs both versions.
The data set is read straight from the idx files under <data-root>/MNIST/raw/ (as
torchvision leaves them after a download, uncompressed).

    python examples/mnist_cnn.py --data-root ~/data --epochs 14 --save-model
"""
import argparse
import json
import os

import numpy as np

import tinyres as torch
import tinyres.nn as nn
import tinyres.nn.functional as F
import tinyres.optim as optim
from tinyres.optim.lr_scheduler import StepLR
from tinyres.safetensors import load_file
from tinyres.utils.data import DataLoader, Dataset

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path):
    """An idx file (MNIST's format): magic 0x0000 08 <ndim>, then ndim big-endian int32
    sizes, then uint8 data. Returns a read-only uint8 array of that shape."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


class MNISTIdx(Dataset):
    """MNIST from the raw idx files: items are (normalised 1x28x28 float tensor, int label)."""

    def __init__(self, root, train=True):
        raw = os.path.join(root, "MNIST", "raw")
        images_file, labels_file = IDX_FILES[train]
        self.images = read_idx(os.path.join(raw, images_file))
        self.labels = read_idx(os.path.join(raw, labels_file))
        if len(self.images) != len(self.labels):
            raise ValueError(f"{raw}: {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = torch.from_numpy(self.images[index].astype(np.float32) / 255.0)
        image = (image - MNIST_MEAN) / MNIST_STD
        return image.unsqueeze(0), int(self.labels[index])


class Net(nn.Module):
    """Two convolutions, max-pooling, dropout and two linears, as the official example."""

    def __init__(self, dropout=(0.25, 0.5)):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(dropout[0])
        self.dropout2 = nn.Dropout(dropout[1])
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


def train(args, model, device, train_loader, optimizer, epoch, losses):
    """One epoch (at most --max-steps steps); appends each step's loss to `losses`."""
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        if args.max_steps is not None and batch_idx >= args.max_steps:
            break
        data, target = data.to(device), target.to(device)
        if args.double:
            data = data.double()
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if batch_idx % args.log_interval == 0:
            print("Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}".format(
                epoch, batch_idx * len(data), len(train_loader.dataset),
                100. * batch_idx / len(train_loader), loss.item()))
            if args.dry_run:
                break


def test(model, device, test_loader, args):
    """Average loss and accuracy on the test set."""
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            if args.double:
                data = data.double()
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # index of the max log-probability
            correct += pred.eq(target.view_as(pred)).sum().item()

    test_loss /= len(test_loader.dataset)
    print("\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n".format(
        test_loss, correct, len(test_loader.dataset),
        100. * correct / len(test_loader.dataset)))


def parse_args(argv=None):
    """The official example's flags, and the ones for small and exact runs."""
    parser = argparse.ArgumentParser(description="PyTorch MNIST Example")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N",
                        help="input batch size for training (default: 64)")
    parser.add_argument("--test-batch-size", type=int, default=1000, metavar="N",
                        help="input batch size for testing (default: 1000)")
    parser.add_argument("--epochs", type=int, default=14, metavar="N",
                        help="number of epochs to train (default: 14)")
    parser.add_argument("--lr", type=float, default=1.0, metavar="LR",
                        help="learning rate (default: 1.0)")
    parser.add_argument("--gamma", type=float, default=0.7, metavar="M",
                        help="Learning rate step gamma (default: 0.7)")
    parser.add_argument("--no-cuda", action="store_true", default=False,
                        help="disables CUDA training")
    parser.add_argument("--dry-run", action="store_true", default=False,
                        help="quickly check a single pass")
    parser.add_argument("--seed", type=int, default=1, metavar="S",
                        help="random seed (default: 1)")
    parser.add_argument("--log-interval", type=int, default=10, metavar="N",
                        help="how many batches to wait before logging training status")
    parser.add_argument("--save-model", action="store_true", default=False,
                        help="For Saving the current Model")
    parser.add_argument("--data-root", default="../data", help="folder holding MNIST/raw/")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop each epoch after this many steps")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--dropout", type=float, nargs=2, default=(0.25, 0.5),
                        metavar=("P1", "P2"), help="the two dropout rates (default: 0.25 0.5)")
    parser.add_argument("--double", action="store_true", help="model and inputs in float64")
    parser.add_argument("--no-shuffle", action="store_true", help="keep the data order")
    parser.add_argument("--init", default=None, help="initial weights (a safetensors file)")
    parser.add_argument("--resume", default=None, help="a saved state_dict to start from")
    parser.add_argument("--log-losses", default=None, help="write the per-step losses (JSON)")
    return parser.parse_args(argv)


def main(argv=None):
    """Train and test for --epochs epochs; --save-model writes mnist_cnn.pt."""
    args = parse_args(argv)
    use_cuda = not args.no_cuda and torch.cuda.is_available()

    torch.manual_seed(args.seed)

    device = torch.device("cuda" if use_cuda else "cpu")

    train_kwargs = {"batch_size": args.batch_size, "shuffle": not args.no_shuffle}
    test_kwargs = {"batch_size": args.test_batch_size}
    loader_kwargs = {"num_workers": args.num_workers, "pin_memory": use_cuda}
    train_kwargs.update(loader_kwargs)
    test_kwargs.update(loader_kwargs)

    dataset1 = MNISTIdx(args.data_root, train=True)
    dataset2 = MNISTIdx(args.data_root, train=False)
    train_loader = DataLoader(dataset1, **train_kwargs)
    test_loader = DataLoader(dataset2, **test_kwargs)

    model = Net(args.dropout)
    if args.init:
        model.load_state_dict(load_file(args.init))
    if args.resume:
        model.load_state_dict(torch.load(args.resume))
    if args.double:
        model = model.double()
    model = model.to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)

    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    losses = []
    for epoch in range(1, args.epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch, losses)
        test(model, device, test_loader, args)
        scheduler.step()

    if args.log_losses:
        with open(args.log_losses, "w") as f:
            json.dump(losses, f)
    if args.save_model:
        torch.save(model.state_dict(), "mnist_cnn.pt")


if __name__ == "__main__":
    main()
