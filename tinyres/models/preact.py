"""Pre-activation ResNets (He, Zhang, Ren, Sun 2016, "Identity Mappings in Deep Residual
Networks"): batch norm and ReLU move into the branch, before each convolution, and nothing
follows the addition. A block computes

    x_{l+1} = x_l + F(x_l),    F = conv(relu(bn(conv(relu(bn(x_l))))))

so its forward ends in the bare `residual_add(out, identity)`, and through any number of
blocks x_L = x_l + sum_i F(x_i): the gradient reaching x_l is dL/dx_L (1 + d/dx_l sum F),
whose "1" arrives untouched, at any depth (the paper's eq. 4-5).

Two details of the paper (its appendix) and of its authors' code:
* the pre-activation of a block that follows a stand-alone convolution, or that changes the
  shape, is shared by both paths: the stem's BN + ReLU is the first block's pre-activation
  (`preact="none"` in the block: its input arrives activated), and a block with a projection
  shortcut applies its BN + ReLU before the split, so the 1x1 projection reads the activated
  input (`preact="shared"`);
* the last block's sum is followed by one more BN + ReLU, before the pooling (`bn_final`).

Projection shortcuts are bare 1x1 convolutions (the next block normalises), as
`downsample.0`. Parameter counts are in the constructors' docstrings and asserted in
tests/test_preact.py from a closed formula. Every BN + ReLU pair runs as
`bn_relu(bn, self.relu, x)`, relu(bn(x)) by one fused op (models/bn_relu.py).
"""
from tinyres import nn
from tinyres.functional.residual import residual_add
from tinyres.models.bn_relu import bn_relu
from tinyres.models.resnet import ResidualBlock, conv1x1, conv3x3

PREACTS = ("own", "shared", "none")


class PreActBlock(ResidualBlock):
    """BN-ReLU-conv3x3 twice (the first conv carries the stride), then the add, nothing
    after. `preact`: "own" (BN-ReLU inside the branch, identity shortcut), "shared" (BN-ReLU
    before the split, read by the projection too), "none" (the input is already activated)."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, preact="own"):
        super().__init__()
        check_preact(preact, downsample)
        self.preact = preact
        self.bn1 = nn.BatchNorm2d(inplanes) if preact != "none" else None
        self.relu = nn.ReLU()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        x = pre_activate(self, x)
        x, identity = self.split(x)
        out = self.conv1(x if self.preact != "own" else bn_relu(self.bn1, self.relu, x))
        out = self.conv2(bn_relu(self.bn2, self.relu, out))
        if self.downsample is not None:
            identity = self.downsample(identity)
        return self.watched(residual_add(out, identity))       # x + F(x), nothing after

    def shortcut_formula(self, grad_out, out):
        """grad_out: the identity path's factor is exactly 1."""
        return identity_formula(self, grad_out)


class PreActBottleneck(ResidualBlock):
    """BN-ReLU-conv1x1 (reduce), BN-ReLU-conv3x3 (with the stride), BN-ReLU-conv1x1
    (expand by 4), then the add, nothing after. `preact` as in PreActBlock."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, preact="own"):
        super().__init__()
        check_preact(preact, downsample)
        self.preact = preact
        self.bn1 = nn.BatchNorm2d(inplanes) if preact != "none" else None
        self.relu = nn.ReLU()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        x = pre_activate(self, x)
        x, identity = self.split(x)
        out = self.conv1(x if self.preact != "own" else bn_relu(self.bn1, self.relu, x))
        out = self.conv2(bn_relu(self.bn2, self.relu, out))
        out = self.conv3(bn_relu(self.bn3, self.relu, out))
        if self.downsample is not None:
            identity = self.downsample(identity)
        return self.watched(residual_add(out, identity))       # x + F(x), nothing after

    def shortcut_formula(self, grad_out, out):
        """grad_out: the identity path's factor is exactly 1."""
        return identity_formula(self, grad_out)


def identity_formula(block, grad_out):
    """A pre-activation block's shortcut path is the identity (nothing after the add):
    grad_out itself; None where a projection changes the shape."""
    return grad_out if block.downsample is None else None


def check_preact(preact, downsample):
    """ValueError for an unknown `preact`, or "own" with a projection (the projection must
    read the activated input: use "shared")."""
    if preact not in PREACTS:
        raise ValueError(f"preact must be one of {PREACTS}, got {preact!r}")
    if preact == "own" and downsample is not None:
        raise ValueError("a pre-activation block with a projection shortcut shares its "
                         "pre-activation with it: use preact='shared' (or 'none')")


def pre_activate(block, x):
    """The shared pre-activation relu(bn1(x)) of a "shared" block, before both paths; x
    itself otherwise (an "own" block activates inside its branch, a "none" block's input
    arrives activated)."""
    return bn_relu(block.bn1, block.relu, x) if block.preact == "shared" else x


def projection(inplanes, outplanes, stride):
    """The projection shortcut of a pre-activation net: a bare 1x1 convolution."""
    return nn.Sequential(conv1x1(inplanes, outplanes, stride))


def make_stage(block, inplanes, planes, blocks, stride, first):
    """One stage: its first block projects when the shape changes and shares its
    pre-activation ("none" after the stem, where `first` is True); the rest are "own"."""
    outplanes = planes * block.expansion
    downsample = projection(inplanes, outplanes, stride) \
        if stride != 1 or inplanes != outplanes else None
    lead = "none" if first else ("shared" if downsample is not None else "own")
    layers = [block(inplanes, planes, stride, downsample, preact=lead)]
    layers += [block(outplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def init_preact(model):
    """kaiming_normal_(fan_out, relu) on convolutions, BatchNorm weight 1 and bias 0 (as
    the torchvision ResNets)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PreActResNet(nn.Module):
    """ImageNet layout: 7x7 stride-2 stem conv, BN, ReLU (the first block's shared
    pre-activation), 3x3 max-pool, four stages (64, 128, 256, 512 planes, strides 1/2/2/2),
    final BN + ReLU, global average pool, fc."""

    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        e = block.expansion
        self.layer1 = make_stage(block, 64, 64, layers[0], 1, first=True)
        self.layer2 = make_stage(block, 64 * e, 128, layers[1], 2, first=False)
        self.layer3 = make_stage(block, 128 * e, 256, layers[2], 2, first=False)
        self.layer4 = make_stage(block, 256 * e, 512, layers[3], 2, first=False)
        inplanes = 512 * e
        self.bn_final = nn.BatchNorm2d(inplanes)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)
        init_preact(self)

    def forward(self, x):
        x = self.maxpool(bn_relu(self.bn1, self.relu, self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = bn_relu(self.bn_final, self.relu, x)                 # after the last sum
        return self.fc(self.avgpool(x).flatten(1))


class CifarPreActResNet(nn.Module):
    """CIFAR layout: 3x3 stem conv of 16 channels, BN, ReLU (the first block's shared
    pre-activation), three stages of n blocks (16, 32, 64 planes at 32x32, 16x16, 8x8),
    final BN + ReLU, global average pool, fc. Projections where the shape changes."""

    def __init__(self, block, n, num_classes=10):
        super().__init__()
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = make_stage(block, 16, 16, n, 1, first=True)
        self.layer2 = make_stage(block, 16 * block.expansion, 32, n, 2, first=False)
        self.layer3 = make_stage(block, 32 * block.expansion, 64, n, 2, first=False)
        self.bn_final = nn.BatchNorm2d(64 * block.expansion)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64 * block.expansion, num_classes)
        init_preact(self)

    def forward(self, x):
        x = bn_relu(self.bn1, self.relu, self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = bn_relu(self.bn_final, self.relu, x)                 # after the last sum
        return self.fc(self.avgpool(x).flatten(1))


# ----- constructors (parameter counts for 10 / 1000 classes, asserted in tests) ---------
def preact_resnet20(**kwargs):
    """6n+2 = 20 layers (n = 3 basic blocks per stage): 272,282 parameters."""
    return CifarPreActResNet(PreActBlock, 3, **kwargs)


def preact_resnet56(**kwargs):
    """n = 9 basic blocks per stage: 855,578 parameters."""
    return CifarPreActResNet(PreActBlock, 9, **kwargs)


def preact_resnet110(**kwargs):
    """n = 18 basic blocks per stage: 1,730,522 parameters (the paper's 1.7M)."""
    return CifarPreActResNet(PreActBlock, 18, **kwargs)


def preact_resnet164(**kwargs):
    """9n+2 = 164 layers (n = 18 bottlenecks per stage): 1,703,258 parameters (1.7M)."""
    return CifarPreActResNet(PreActBottleneck, 18, **kwargs)


def preact_resnet1001(**kwargs):
    """n = 111 bottlenecks per stage: 10,327,706 parameters (the paper's 10.2M)."""
    return CifarPreActResNet(PreActBottleneck, 111, **kwargs)


def preact_resnet18(**kwargs):
    """ImageNet layout, [2, 2, 2, 2] basic blocks: 11,687,720 parameters, 1,792 fewer than
    resnet18: the BatchNorms of its three projections (the other BatchNorms moved, to
    before the convolutions and after the last sum, and add up to the same count)."""
    return PreActResNet(PreActBlock, [2, 2, 2, 2], **kwargs)


def preact_resnet50(**kwargs):
    """ImageNet layout, [3, 4, 6, 3] bottlenecks: 25,549,352 parameters."""
    return PreActResNet(PreActBottleneck, [3, 4, 6, 3], **kwargs)
