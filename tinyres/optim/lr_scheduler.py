"""Learning-rate schedules, with torch.optim.lr_scheduler's names, arguments and rates.

The formula schedules live here (LambdaLR, MultiplicativeLR, StepLR, MultiStepLR,
ConstantLR, LinearLR, ExponentialLR, PolynomialLR, CosineAnnealingLR,
CosineAnnealingWarmRestarts and tinyres's ExtendableCosineLR); OneCycleLR,
ReduceLROnPlateau, SequentialLR and ChainedScheduler in lr_policies.py; the base class
and the conventions (step order, initial_lr, state_dict) in scheduler_base.py.

Each get_lr() is torch's chainable form, written the same way, so the rates agree with
torch's to the last bit or nearly (CosineAnnealingLR is torch's recursion, not the closed
form: after T_max it climbs back exactly as torch's does).
"""
import math
import types
from bisect import bisect_right

from tinyres.optim.lr_policies import (ChainedScheduler, OneCycleLR, ReduceLROnPlateau,
                                       SequentialLR)
from tinyres.optim.scheduler_base import LRScheduler, current_lrs

__all__ = ["ChainedScheduler", "ConstantLR", "CosineAnnealingLR",
           "CosineAnnealingWarmRestarts", "ExponentialLR", "ExtendableCosineLR", "LambdaLR",
           "LinearLR", "LRScheduler", "MultiStepLR", "MultiplicativeLR", "OneCycleLR",
           "PolynomialLR", "ReduceLROnPlateau", "SequentialLR", "StepLR"]


class _LRScheduler(LRScheduler):
    """torch's old name for LRScheduler, which older scripts subclass."""


def _lambdas(optimizer, lr_lambda):
    """One function per group: a list/tuple of the right length, or one shared."""
    if not isinstance(lr_lambda, (list, tuple)):
        return [lr_lambda] * len(optimizer.param_groups)
    if len(lr_lambda) != len(optimizer.param_groups):
        raise ValueError(f"Expected {len(optimizer.param_groups)} lr_lambdas, but got "
                         f"{len(lr_lambda)}")
    return list(lr_lambda)


class _LambdaState:
    """state_dict handling of lr_lambdas as torch: a callable object's __dict__ is saved
    (plain functions are not; tinyres leaves the entry out when every one is a function)."""

    def state_dict(self):
        out = super().state_dict()
        if any(not isinstance(fn, types.FunctionType) for fn in self.lr_lambdas):
            out["lr_lambdas"] = [None if isinstance(fn, types.FunctionType)
                                 else dict(fn.__dict__) for fn in self.lr_lambdas]
        return out

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        saved = state_dict.pop("lr_lambdas", None) or []
        super().load_state_dict(state_dict)
        for fn, entries in zip(self.lr_lambdas, saved):
            if entries is not None:
                fn.__dict__.update(entries)


class LambdaLR(_LambdaState, LRScheduler):
    """lr = base_lr * lr_lambda(last_epoch), one function per group or one for all."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.optimizer = optimizer
        self.lr_lambdas = _lambdas(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * fn(self.last_epoch) for fn, base in zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(_LambdaState, LRScheduler):
    """lr = lr * lr_lambda(last_epoch) at every step after the first."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.optimizer = optimizer
        self.lr_lambdas = _lambdas(optimizer, lr_lambda)
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return current_lrs(self.optimizer)
        return [group["lr"] * fn(self.last_epoch)
                for fn, group in zip(self.lr_lambdas, self.optimizer.param_groups)]


class StepLR(LRScheduler):
    """Multiply the rate by gamma every step_size epochs."""

    settings = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return current_lrs(self.optimizer)
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size)
                for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the rate by gamma at each milestone epoch: lr = base_lr * gamma ** (number
    of milestones <= last_epoch). The ResNet paper's schedule: lr 0.1, divided by 10 at
    32k and 48k iterations."""

    settings = ("milestones", "gamma")

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        # torch's chainable form: scale the current rate when an epoch is a milestone
        # (a milestone listed twice scales twice).
        factor = self.gamma ** self.milestones.count(self.last_epoch)
        if factor == 1:
            return current_lrs(self.optimizer)
        return [group["lr"] * factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** bisect_right(self.milestones, self.last_epoch)
                for base in self.base_lrs]


class ConstantLR(LRScheduler):
    """lr = base_lr * factor until epoch total_iters, then base_lr."""

    settings = ("factor", "total_iters")

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return current_lrs(self.optimizer)
        return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
                for base in self.base_lrs]


class LinearLR(LRScheduler):
    """The factor goes linearly from start_factor to end_factor over total_iters epochs."""

    settings = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 "
                             "and less or equal to 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor, self.end_factor = start_factor, end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return current_lrs(self.optimizer)
        change = self.end_factor - self.start_factor
        ratio = 1.0 + change / (self.total_iters * self.start_factor
                                + (self.last_epoch - 1) * change)
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        change = self.end_factor - self.start_factor
        return [base * (self.start_factor
                        + change * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """lr = lr * gamma at every step after the first."""

    settings = ("gamma",)

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return current_lrs(self.optimizer)
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class PolynomialLR(LRScheduler):
    """lr = base_lr * (1 - min(t, total_iters) / total_iters) ** power."""

    settings = ("total_iters", "power")

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        self.total_iters, self.power = total_iters, power
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial or self.last_epoch > self.total_iters:
            return current_lrs(self.optimizer)
        decay = ((1.0 - self.last_epoch / self.total_iters)
                 / (1.0 - (self.last_epoch - 1) / self.total_iters)) ** self.power
        return [group["lr"] * decay for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters)
                ** self.power for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """From base_lr down to eta_min in T_max epochs along a half cosine, and back up in the
    next T_max (as torch). The rates come from torch's recursion on the current rate:

        lr_t = eta_min + (lr_{t-1} - eta_min) * (1 + cos(pi t / T)) / (1 + cos(pi (t-1) / T))

    which equals eta_min + (base_lr - eta_min) * (1 + cos(pi t / T)) / 2 up to rounding,
    while it lets another scheduler change the rate in between."""

    settings = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        epoch, T, low = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return current_lrs(self.optimizer)
        if self._step_count == 1 and epoch > 0:
            return [low + (base - low) * (1 + math.cos(epoch * math.pi / T)) / 2
                    for base in self.base_lrs]
        if (epoch - 1 - T) % (2 * T) == 0:          # the bottom: the recursion would divide by 0
            return [group["lr"] + (base - low) * (1 - math.cos(math.pi / T)) / 2
                    for base, group in zip(self.base_lrs, groups)]
        return [(1 + math.cos(math.pi * epoch / T)) / (1 + math.cos(math.pi * (epoch - 1) / T))
                * (group["lr"] - low) + low for group in groups]

    def _get_closed_form_lr(self):
        return [self.eta_min + (base - self.eta_min)
                * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


class ExtendableCosineLR(CosineAnnealingLR):
    """CosineAnnealingLR whose remaining length can change part-way, for a run resumed
    with more (or fewer) epochs than it was laid out for.

    Until extend() is called it is CosineAnnealingLR, rate for rate. After, the rate is
    eta_min + (base_lr - eta_min) * (1 + cos(pi * phase)) / 2, where the phase runs
    linearly from `from_phase` at epoch `from_epoch` to 1 at epoch T_max: extend(T_max)
    keeps the phase reached so far and stretches the rest of the half-cosine to end at the
    new T_max. The rate never jumps, keeps decreasing, and reaches eta_min at the new
    last epoch (where CosineAnnealingLR with the old T_max would hit eta_min early and
    climb back up)."""

    settings = CosineAnnealingLR.settings + ("from_epoch", "from_phase")

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.from_epoch, self.from_phase = 0, 0.0
        super().__init__(optimizer, T_max, eta_min, last_epoch)

    def phase(self, epoch):
        """Where `epoch` lies on the half-cosine, 0 (start) to 1 (eta_min)."""
        return self.from_phase + (1 - self.from_phase) * (epoch - self.from_epoch) / (
            self.T_max - self.from_epoch)

    def extend(self, T_max):
        """Make the schedule end at epoch T_max (> last_epoch), continuing from here."""
        if T_max <= self.last_epoch:
            raise ValueError(f"ExtendableCosineLR.extend: T_max {T_max} must be after the "
                             f"current epoch {self.last_epoch}")
        self.from_phase = self.phase(self.last_epoch)
        self.from_epoch, self.T_max = self.last_epoch, T_max

    def get_lr(self):
        p, k = self.from_phase, self.from_epoch
        if p == 0 and k == 0:
            return super().get_lr()
        angle = math.pi * p + math.pi * (1 - p) * (self.last_epoch - k) / (self.T_max - k)
        cosine = (1 + math.cos(angle)) / 2
        return [self.eta_min + (base - self.eta_min) * cosine for base in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: a cosine from base_lr to eta_min over T_i epochs, then a restart, with
    T_i = T_0 * T_mult ** (restarts so far)."""

    settings = ("T_0", "T_i", "T_mult", "eta_min", "T_cur")

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type "
                             f"{type(eta_min)}")
        self.T_0, self.T_i, self.T_mult, self.eta_min = T_0, T_0, T_mult, eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * self.T_cur
                                                                     / self.T_i)) / 2
                for base in self.base_lrs]

    def step(self, epoch=None):
        """Advance one step, or jump to a (possibly fractional) epoch, as torch."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            self._jump_to(epoch)
        self.last_epoch = math.floor(epoch)
        self._step_count += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = current_lrs(self.optimizer)

    def _jump_to(self, epoch):
        if epoch < 0:
            raise ValueError(f"Expected non-negative epoch, but got {epoch}")
        if epoch < self.T_0:
            self.T_i, self.T_cur = self.T_0, epoch
        elif self.T_mult == 1:
            self.T_cur = epoch % self.T_0
        else:
            n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
            self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
            self.T_i = self.T_0 * self.T_mult ** n


