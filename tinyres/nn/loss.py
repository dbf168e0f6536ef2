"""Loss layers with torch.nn's names and arguments: each keeps its options (reduction,
and class weights as a buffer named 'weight', as torch, so state_dict keys match) and
calls one op of tinyres.nn.functional."""
from tinyres.functional.loss import reduction_of
from tinyres.nn import functional as F
from tinyres.nn.layers import check_input
from tinyres.nn.module import Module


class _Loss(Module):
    """Holds reduction ('mean', 'sum' or 'none'; the deprecated size_average/reduce pair
    is translated as torch does). As torch, a bad reduction is refused at the first call."""

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = reduction_of(type(self).__name__, reduction, size_average, reduce)
        self.reduction = reduction


class _WeightedLoss(_Loss):
    """A loss with per-class weights, registered as the buffer 'weight' (or None)."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of class indices given log-probabilities."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(check_input(self, input), target, self.weight,
                          ignore_index=self.ignore_index, reduction=self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    """Cross-entropy of logits against class indices or class probabilities, with
    weight, ignore_index, reduction and label_smoothing as torch."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(check_input(self, input), target, self.weight,
                               ignore_index=self.ignore_index, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)


class BCELoss(_WeightedLoss):
    """Binary cross-entropy of probabilities."""

    def forward(self, input, target):
        return F.binary_cross_entropy(check_input(self, input),
                                      check_input(self, target, "target"), self.weight,
                                      reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of logits; weight and pos_weight are buffers, as torch."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean",
                 pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(
            check_input(self, input), check_input(self, target, "target"), self.weight,
            reduction=self.reduction, pos_weight=self.pos_weight)


class MSELoss(_Loss):
    """Squared error."""

    def forward(self, input, target):
        return F.mse_loss(check_input(self, input), check_input(self, target, "target"),
                          reduction=self.reduction)


class L1Loss(_Loss):
    """Absolute error."""

    def forward(self, input, target):
        return F.l1_loss(check_input(self, input), check_input(self, target, "target"),
                         reduction=self.reduction)


class SmoothL1Loss(_Loss):
    """Squared error below beta, absolute error above (continuous at beta)."""

    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def forward(self, input, target):
        return F.smooth_l1_loss(check_input(self, input), check_input(self, target, "target"),
                                reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    """Squared error below delta, delta times the absolute error above."""

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction=reduction)
        self.delta = delta

    def forward(self, input, target):
        return F.huber_loss(check_input(self, input), check_input(self, target, "target"),
                            reduction=self.reduction, delta=self.delta)


class KLDivLoss(_Loss):
    """Kullback-Leibler divergence of log-probabilities input from target."""

    def __init__(self, size_average=None, reduce=None, reduction="mean", log_target=False):
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def forward(self, input, target):
        return F.kl_div(check_input(self, input), check_input(self, target, "target"),
                        reduction=self.reduction, log_target=self.log_target)
