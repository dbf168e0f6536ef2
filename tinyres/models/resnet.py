"""ResNets: torchvision's ImageNet family and the CIFAR family of He et al. (2015), with
their plain twins (no shortcut) and a shortcut scale lambda.

Every residual block's forward ends the same way, where a torchvision reader looks:

    out = residual_add(out, identity, self.shortcut_scale)   # F(x) + lambda * x: the "+1"
    return self.watched(self.relu(out))

so the gradient reaching the block's input is grad * (F'(x) + lambda). Inside the branch,
`conv_bn(self.conv1, self.bn1, x, self.relu)` is relu(bn1(conv1(x))): in training one
fused op (on the CPU, batch norm's statistics summed by the convolution's kernels while
its output is in cache); in evaluation with no graph, one pass of the convolution with both applied to
its output in cache (models/bn_relu.py says when it calls the modules instead). In
inference, where no gradient will ever flow, the block's last convolution runs those
closing lines in its own pass, `conv_bn_residual`: batch norm's affine map, the scaled
shortcut and the ReLU applied to each task's output while it is in cache, the values of
the separate ops to the last bit (resnet20's inference at batch 128 took 0.98 of its
time: the median of 6 alternating process pairs, tuned malloc, 2 threads, AMD family 26).
Names and state_dict keys follow torchvision (conv1, bn1, layer1.0.conv1,
layer2.0.downsample.0, fc), so weights move between the two.
"""
from tinyres import nn
from tinyres.functional.residual import residual_add
from tinyres.models.bn_relu import can_fuse_residual, conv_bn, conv_bn_residual
from tinyres.functional.pad import pad


def conv3x3(in_planes, out_planes, stride=1):
    """3x3 convolution with padding 1, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1,
                     bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    """1x1 convolution, no bias: the projection shortcut when the shape changes."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ResidualBlock(nn.Module):
    """What every block shares: a shortcut scale, an optional shortcut, and the split of
    the input into its two paths (a probe taps each path to see its gradient)."""

    def __init__(self, shortcut_scale=1.0, residual=True):
        super().__init__()
        self.shortcut_scale = shortcut_scale
        self.residual = residual      # False: the plain twin, no shortcut at all
        self.probe = None             # set by tinyres.probes.GradientProbe

    def split(self, x):
        """(x for the branch, x for the shortcut): the same tensor, unless a probe is
        attached, which puts a gradient tap on each path."""
        return (x, x) if self.probe is None else self.probe.tap(self, x)

    def shortcut(self, identity):
        """The shortcut's input, through the downsample where the block changes shape."""
        return identity if self.downsample is None else self.downsample(identity)

    def watched(self, out):
        """The block's output, shown to an attached probe (which records its gradient)."""
        if self.probe is not None:
            self.probe.watch_output(self, out)
        return out

    def shortcut_formula(self, grad_out, out):
        """The gradient the shortcut path carries back by the formula, from the gradient
        at the block's output and the output's value (arrays); None where no closed formula
        is stated (a projection or option-A shortcut). For y = relu(F(x) + lambda x):
        1[y > 0] * lambda * grad_out (0 in the plain twin)."""
        if not self.residual:
            return 0.0 * grad_out
        if self.downsample is not None:
            return None
        return (out > 0) * self.shortcut_scale * grad_out


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions; the first one carries the stride."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, shortcut_scale=1.0,
                 residual=True):
        super().__init__(shortcut_scale, residual)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        x, identity = self.split(x)
        out = conv_bn(self.conv1, self.bn1, x, self.relu)    # relu(bn1(conv1(x))), fused
        if can_fuse_residual(self, self.conv2, self.bn2, out):   # inference: the lines
            return conv_bn_residual(self.conv2, self.bn2, out,   # below in conv2's pass
                                    self.shortcut(identity), self.shortcut_scale, self.relu)
        out = conv_bn(self.conv2, self.bn2, out)             # bn2(conv2(out))
        identity = self.shortcut(identity)
        if self.residual:                 # False in the plain twin: no shortcut at all
            out = residual_add(out, identity, self.shortcut_scale)  # F(x) + lambda x: the "+1"
        return self.watched(self.relu(out))


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (with the stride, as torchvision), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, shortcut_scale=1.0,
                 residual=True):
        super().__init__(shortcut_scale, residual)
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        x, identity = self.split(x)
        out = conv_bn(self.conv1, self.bn1, x, self.relu)    # relu(bn1(conv1(x))), fused
        out = conv_bn(self.conv2, self.bn2, out, self.relu)  # relu(bn2(conv2(out)))
        if can_fuse_residual(self, self.conv3, self.bn3, out):   # inference: the lines
            return conv_bn_residual(self.conv3, self.bn3, out,   # below in conv3's pass
                                    self.shortcut(identity), self.shortcut_scale, self.relu)
        out = conv_bn(self.conv3, self.bn3, out)             # bn3(conv3(out))
        identity = self.shortcut(identity)
        if self.residual:                 # False in the plain twin: no shortcut at all
            out = residual_add(out, identity, self.shortcut_scale)  # F(x) + lambda x: the "+1"
        return self.watched(self.relu(out))


def last_bn(block):
    """The BatchNorm that closes a block's branch (zeroed by zero_init_residual)."""
    return block.bn3 if isinstance(block, Bottleneck) else block.bn2


def init_weights(model, zero_init_residual):
    """torchvision's initialisation: kaiming_normal_(fan_out, relu) on convolutions,
    BatchNorm weight 1 and bias 0; optionally each block's last BN weight 0, so every
    block starts as the identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, ResidualBlock):
                nn.init.zeros_(last_bn(m).weight)


class ResNet(nn.Module):
    """The ImageNet ResNet: 224 -> 112 (7x7 stride-2 stem) -> 56 (max-pool) -> 56, 28,
    14, 7 (four stages, strides 1/2/2/2) -> global average pool -> fc."""

    def __init__(self, block, layers, num_classes=1000, zero_init_residual=False,
                 shortcut_scale=1.0):
        super().__init__()
        self.inplanes = 64
        self.shortcut_scale = shortcut_scale
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        init_weights(self, zero_init_residual)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.shortcut_scale)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, shortcut_scale=self.shortcut_scale))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(conv_bn(self.conv1, self.bn1, x, self.relu))   # the stem
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


# ----- the CIFAR family (He et al. 2015, section 4.2) -----------------------------------
class ShortcutA(nn.Module):
    """Option A: no parameters. Subsample by the stride, then zero-pad the new channels
    (half before, half after), so the identity keeps its "+1" across a change of shape."""

    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.stride = stride
        extra = out_planes - in_planes
        self.channel_pad = (extra // 2, extra - extra // 2)

    def forward(self, x):
        s = self.stride
        x = x[:, :, ::s, ::s]
        return pad(x, (0, 0, 0, 0) + self.channel_pad)

    def extra_repr(self):
        return f"stride={self.stride}, channel_pad={self.channel_pad}"


def projection(in_planes, out_planes, stride):
    """Options B and C: a 1x1 convolution (with the stride) and a BatchNorm."""
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


def cifar_shortcut(option, in_planes, out_planes, stride):
    """The shortcut module of a CIFAR block, or None for an identity (or no) shortcut."""
    changes_shape = stride != 1 or in_planes != out_planes
    if option is None:
        return None
    if option == "C" or (option == "B" and changes_shape):
        return projection(in_planes, out_planes, stride)
    if option == "A" and changes_shape:
        return ShortcutA(in_planes, out_planes, stride)
    if option not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A', 'B', 'C' or None, got {option!r}")
    return None


class CifarResNet(nn.Module):
    """6n+2 layers: a 3x3 stem of 16 channels, three stages of n BasicBlocks with 16, 32
    and 64 channels at 32x32, 16x16 and 8x8, global average pool, fc to 10 classes.
    `shortcut=None` builds the plain twin: the same layers, no shortcuts."""

    def __init__(self, n, num_classes=10, shortcut="A", shortcut_scale=1.0,
                 zero_init_residual=False):
        super().__init__()
        self.inplanes = 16
        self.shortcut = shortcut
        self.shortcut_scale = shortcut_scale
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, n, stride=1)
        self.layer2 = self._make_layer(32, n, stride=2)
        self.layer3 = self._make_layer(64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        init_weights(self, zero_init_residual)

    def _make_layer(self, planes, blocks, stride):
        layers = []
        for i in range(blocks):
            s = stride if i == 0 else 1
            layers.append(BasicBlock(
                self.inplanes, planes, s,
                downsample=cifar_shortcut(self.shortcut, self.inplanes, planes, s),
                shortcut_scale=self.shortcut_scale, residual=self.shortcut is not None))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        x = conv_bn(self.conv1, self.bn1, x, self.relu)      # the stem: relu(bn1(conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


# ----- constructors --------------------------------------------------------------------
def resnet18(**kwargs):
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs):
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50(**kwargs):
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


def resnet101(**kwargs):
    return ResNet(Bottleneck, [3, 4, 23, 3], **kwargs)


def resnet152(**kwargs):
    return ResNet(Bottleneck, [3, 8, 36, 3], **kwargs)


def resnet20(**kwargs):
    return CifarResNet(3, **kwargs)


def resnet32(**kwargs):
    return CifarResNet(5, **kwargs)


def resnet44(**kwargs):
    return CifarResNet(7, **kwargs)


def resnet56(**kwargs):
    return CifarResNet(9, **kwargs)


def resnet110(**kwargs):
    return CifarResNet(18, **kwargs)
