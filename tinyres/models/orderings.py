"""Where batch norm and ReLU go around the addition: the five blocks of He et al. (2016,
"Identity Mappings in Deep Residual Networks", Fig. 4), and CIFAR ResNets built of them with
any shortcut variant of tinyres.models.shortcuts (Table 1).

    (a) OriginalBlock        x_{l+1} = relu(x + BN(conv(relu(BN(conv(x))))))
    (b) BNAfterAddBlock      x_{l+1} = relu(BN(x + conv(relu(BN(conv(x))))))
    (c) ReLUBeforeAddBlock   x_{l+1} = x + relu(BN(conv(relu(BN(conv(x))))))
    (d) ReLUOnlyPreActBlock  x_{l+1} = x + BN(conv(relu(BN(conv(relu(x))))))
    (e) FullPreActBlock      x_{l+1} = x + conv(relu(BN(conv(relu(BN(x))))))

In (a) and (b) something follows the addition, so the shortcut path is multiplied by the
ReLU's mask (and in (b) by the batch norm's Jacobian); in (c), (d) and (e) the shortcut
path is the join's factor alone (1 for the identity). Each forward calls the block's join,
`self.join(out, identity, x)`, whose own forward is the formula ending in `residual_add`.

`CifarVariantResNet(n, shortcut=..., ordering=...)` is the CIFAR ResNet skeleton
(tinyres.models.resnet.CifarResNet: 3x3 stem with BN and ReLU, three stages of n blocks at
16, 32, 64 channels, pool, fc) with the chosen join on every block that keeps the shape; the
two blocks that subsample keep an identity join on an option-A shortcut, as in the paper,
where the variants replace only the identity shortcuts. The pre-activation orderings end with
a BN + ReLU before the pooling.
"""
from tinyres import nn
from tinyres.models.resnet import ResidualBlock, ShortcutA, conv3x3, init_weights
from tinyres.models.shortcuts import IdentityShortcut, make_shortcut


class OrderedBlock(ResidualBlock):
    """The layers every ordering shares: two 3x3 convolutions (the first with the stride),
    two batch norms (bn1 before conv1 in a full pre-activation block, after it otherwise;
    bn2 after the add in (b)), an option-A shortcut where the shape changes, and the join."""

    pre_activation = False          # (d) and (e): the network adds a final BN + ReLU
    bn1_before_conv1 = False

    def __init__(self, inplanes, planes, stride=1, join=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(inplanes if self.bn1_before_conv1 else planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        changes_shape = stride != 1 or inplanes != planes
        self.downsample = ShortcutA(inplanes, planes, stride) if changes_shape else None
        self.join = join if join is not None else IdentityShortcut()
        self.shortcut_scale = self.join.scale
        self.stride = stride

    def shortcut_formula(self, grad_out, out):
        """The gradient the shortcut path carries back by the formula, from the gradient at
        the block's output (and its output value): the join's factor, behind the ReLU's
        mask where a ReLU follows the add; None where the shape changes."""
        if self.downsample is not None:
            return None
        return self.join.shortcut_grad(grad_out)


class OriginalBlock(OrderedBlock):
    """(a) the original block: ReLU after the addition."""

    def forward(self, x):
        x, identity = self.split(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out = self.join(out, self.shortcut(identity), x)
        return self.watched(self.relu(out))

    def shortcut_formula(self, grad_out, out):
        """1[y > 0] times the join's factor: the ReLU after the add masks the path."""
        if self.downsample is not None:
            return None
        return self.join.shortcut_grad((out > 0) * grad_out)


class BNAfterAddBlock(OrderedBlock):
    """(b) batch norm after the addition, then ReLU."""

    def forward(self, x):
        x, identity = self.split(x)
        out = self.conv2(self.relu(self.bn1(self.conv1(x))))
        out = self.join(out, self.shortcut(identity), x)
        return self.watched(self.relu(self.bn2(out)))

    def shortcut_formula(self, grad_out, out):
        """None: the batch norm after the add mixes the whole batch into the path."""
        return None


class ReLUBeforeAddBlock(OrderedBlock):
    """(c) ReLU before the addition: the branch's output is never negative."""

    def forward(self, x):
        x, identity = self.split(x)
        out = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        return self.watched(self.join(out, self.shortcut(identity), x))


class ReLUOnlyPreActBlock(OrderedBlock):
    """(d) ReLU-only pre-activation: ReLU, conv, BN, ReLU, conv, BN, then the add."""

    pre_activation = True

    def forward(self, x):
        x, identity = self.split(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(self.relu(x))))))
        return self.watched(self.join(out, self.shortcut(identity), x))


class FullPreActBlock(OrderedBlock):
    """(e) full pre-activation: BN, ReLU, conv, BN, ReLU, conv, then the add."""

    pre_activation = True
    bn1_before_conv1 = True

    def forward(self, x):
        x, identity = self.split(x)
        out = self.conv2(self.relu(self.bn2(self.conv1(self.relu(self.bn1(x))))))
        return self.watched(self.join(out, self.shortcut(identity), x))


ORDERINGS = {"original": OriginalBlock, "bn_after_add": BNAfterAddBlock,
             "relu_before_add": ReLUBeforeAddBlock, "relu_only_preact": ReLUOnlyPreActBlock,
             "full_preact": FullPreActBlock}


class CifarVariantResNet(nn.Module):
    """6n+2 layers as CifarResNet, with blocks of the given `ordering` (a key of
    ORDERINGS) and the `shortcut` join (one of tinyres.models.shortcuts.SHORTCUTS, with its
    options lam, scale_branch, gate_bias, p) on every block that keeps the shape.
    CifarVariantResNet(n) is resnet(6n+2)'s architecture with its identity shortcuts."""

    def __init__(self, n, shortcut="identity", ordering="original", num_classes=10,
                 **shortcut_options):
        super().__init__()
        if ordering not in ORDERINGS:
            raise ValueError(f"ordering must be one of {sorted(ORDERINGS)}, got {ordering!r}")
        self.block = ORDERINGS[ordering]
        self.shortcut, self.ordering = shortcut, ordering
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(16, 16, n, 1, shortcut, shortcut_options)
        self.layer2 = self._make_layer(16, 32, n, 2, shortcut, shortcut_options)
        self.layer3 = self._make_layer(32, 64, n, 2, shortcut, shortcut_options)
        self.bn_final = nn.BatchNorm2d(64) if self.block.pre_activation else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        init_weights(self, zero_init_residual=False)     # (convolution weights only: the
                                                          # gates keep their bias option)

    def _make_layer(self, inplanes, planes, blocks, stride, shortcut, options):
        layers = []
        for i in range(blocks):
            s = stride if i == 0 else 1
            keeps_shape = s == 1 and inplanes == planes
            join = make_shortcut(shortcut, planes, **options) if keeps_shape else None
            layers.append(self.block(inplanes, planes, s, join=join))
            inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.bn_final is not None:
            x = self.relu(self.bn_final(x))
        return self.fc(self.avgpool(x).flatten(1))
