"""Train a CIFAR-10 ResNet (He et al. 2015, ResNet-20 by default) in the usual PyTorch style.

This is a PyTorch training script with its import lines changed to tinyres's and nothing
else: examples/README.md shows the diff, and tests/test_examples.py runs both versions.

    python examples/cifar_resnet.py --data-root ~/data --epochs 200
    python examples/cifar_resnet.py --data-root ~/data --resume      # go on from the checkpoint

--data-root holds cifar-10-batches-py/ (the extracted python-pickle archive).
"""
import argparse
import json
import os

import tinyres as torch
import tinyres.nn as nn
import tinyres.nn.functional as F
from tinyres.safetensors import load_file
from tinyres.utils.data import DataLoader
from tinyres.vision import datasets, transforms

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def conv3x3(in_planes, out_planes, stride=1):
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1,
                     bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut: identity, or a 1x1 projection where the
    shape changes."""
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    """The CIFAR ResNet: a 3x3 stem, three stages of `num_blocks` blocks at widths
    w, 2w, 4w (the last two halve the resolution), global average pooling, a linear."""

    def __init__(self, block, num_blocks, num_classes=10, width=16):
        super().__init__()
        self.in_planes = width
        self.conv1 = conv3x3(3, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(block, width, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 2 * width, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, num_blocks[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(4 * width * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for s in strides:
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.avgpool(out)
        out = torch.flatten(out, 1)
        return self.linear(out)


def resnet(depth=20, width=16, num_classes=10):
    """ResNet-`depth` for CIFAR (depth = 6n + 2: 20, 32, 44, 56, 110)."""
    if (depth - 2) % 6 != 0:
        raise ValueError(f"depth should be 6n + 2 (20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    return ResNet(BasicBlock, [n, n, n], num_classes=num_classes, width=width)


def parse_args(argv=None):
    """The command line (see --help)."""
    parser = argparse.ArgumentParser(description="CIFAR-10 ResNet training")
    parser.add_argument("--data-root", default="./data",
                        help="folder holding cifar-10-batches-py/")
    parser.add_argument("--depth", type=int, default=20, help="6n + 2 (default 20)")
    parser.add_argument("--width", type=int, default=16, help="channels of the first stage")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop each epoch after this many steps")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--test-batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default="./checkpoint/ckpt.pth")
    parser.add_argument("--resume", "-r", action="store_true", help="resume from --checkpoint")
    parser.add_argument("--double", action="store_true", help="model and inputs in float64")
    parser.add_argument("--no-augment", action="store_true", help="no random crop or flip")
    parser.add_argument("--no-shuffle", action="store_true", help="keep the data order")
    parser.add_argument("--init", default=None, help="initial weights (a safetensors file)")
    parser.add_argument("--log-losses", default=None, help="write the per-step losses (JSON)")
    return parser.parse_args(argv)


def build_loaders(args):
    """CIFAR-10's train and test loaders, the torchvision way."""
    normalize = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
    if args.no_augment:
        transform_train = transforms.Compose([transforms.ToTensor(), normalize])
    else:
        transform_train = transforms.Compose([
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ])
    transform_test = transforms.Compose([transforms.ToTensor(), normalize])

    trainset = datasets.CIFAR10(root=args.data_root, train=True, download=False,
                                transform=transform_train)
    testset = datasets.CIFAR10(root=args.data_root, train=False, download=False,
                               transform=transform_test)
    trainloader = DataLoader(trainset, batch_size=args.batch_size, shuffle=not args.no_shuffle,
                             num_workers=args.num_workers, pin_memory=True)
    testloader = DataLoader(testset, batch_size=args.test_batch_size, shuffle=False,
                            num_workers=args.num_workers, pin_memory=True)
    return trainloader, testloader


def train(epoch, model, loader, criterion, optimizer, device, args, losses):
    """One epoch (at most --max-steps steps); appends each step's loss to `losses`."""
    print(f"\nEpoch: {epoch}")
    model.train()
    train_loss, correct, total = 0.0, 0, 0
    for batch_idx, (inputs, targets) in enumerate(loader):
        if args.max_steps is not None and batch_idx >= args.max_steps:
            break
        inputs, targets = inputs.to(device), targets.to(device)
        if args.double:
            inputs = inputs.double()
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, targets)
        loss.backward()
        optimizer.step()

        losses.append(loss.item())
        train_loss += loss.item()
        _, predicted = outputs.max(1)
        total += targets.size(0)
        correct += predicted.eq(targets).sum().item()
        print(f"  step {batch_idx}: loss {train_loss / (batch_idx + 1):.4f} | "
              f"acc {100.0 * correct / total:.2f}% ({correct}/{total})")


def test(model, loader, criterion, device, args):
    """Loss and accuracy on the test set; returns the accuracy in percent."""
    model.eval()
    test_loss, correct, total = 0.0, 0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            if args.double:
                inputs = inputs.double()
            outputs = model(inputs)
            test_loss += criterion(outputs, targets).item() * targets.size(0)
            correct += outputs.argmax(dim=1).eq(targets).sum().item()
            total += targets.size(0)
    acc = 100.0 * correct / total
    print(f"  test: loss {test_loss / total:.4f} | acc {acc:.2f}% ({correct}/{total})")
    return acc


def save_checkpoint(model, optimizer, scheduler, epoch, acc, path):
    """Everything --resume needs, with torch.save."""
    state = {
        "net": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "acc": acc,
    }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save(state, path)


def main(argv=None):
    """Train, evaluate and checkpoint for --epochs epochs."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True

    trainloader, testloader = build_loaders(args)

    model = resnet(args.depth, args.width)
    if args.init:
        model.load_state_dict(load_file(args.init))
    if args.double:
        model = model.double()
    model = model.to(device)
    print(f"ResNet-{args.depth} (width {args.width}) on {device}: "
          f"{sum(p.numel() for p in model.parameters())} parameters")

    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay, nesterov=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)

    start_epoch, best_acc = 0, 0.0
    if args.resume:
        print(f"==> Resuming from {args.checkpoint}")
        checkpoint = torch.load(args.checkpoint)
        model.load_state_dict(checkpoint["net"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start_epoch = checkpoint["epoch"] + 1
        best_acc = checkpoint["acc"]

    losses = []
    for epoch in range(start_epoch, args.epochs):
        train(epoch, model, trainloader, criterion, optimizer, device, args, losses)
        acc = test(model, testloader, criterion, device, args)
        scheduler.step()
        best_acc = max(best_acc, acc)
        save_checkpoint(model, optimizer, scheduler, epoch, best_acc, args.checkpoint)

    if args.log_losses:
        with open(args.log_losses, "w") as f:
            json.dump(losses, f)
    print(f"best accuracy {best_acc:.2f}%")


if __name__ == "__main__":
    main()
