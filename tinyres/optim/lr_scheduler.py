"""Learning-rate schedules, with torch.optim.lr_scheduler's semantics.

A scheduler sets `group['lr']` of its optimizer's groups; call `scheduler.step()` once per
epoch, after `optimizer.step()`. Creating one performs the first step (last_epoch 0) and
records each group's starting rate as `group['initial_lr']` (the `base_lrs`).

state_dict() holds numbers and lists only: last_epoch, _step_count, base_lrs, _last_lr
and the schedule's own settings (milestones and gamma, or T_max and eta_min).
"""
import math

import numpy as np

from tinyres.optim.optimizer import Optimizer


def _plain(value):
    """Python numbers and lists from what numpy.load gives back (0-d and 1-d arrays)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.item() if value.ndim == 0 else value.tolist()
    return list(value) if isinstance(value, tuple) else value


class LRScheduler:
    """Base class: subclasses define get_lr(), the rates for the new last_epoch."""

    settings = ()     # the subclass's hyper-parameters saved in state_dict()

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] "
                               "when resuming a scheduler with last_epoch >= 0")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self.step()

    def get_lr(self):
        raise NotImplementedError

    def step(self):
        """Advance one epoch and set the optimizer's learning rates."""
        self._step_count += 1
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The learning rates set by the last step(), one per group."""
        return list(self._last_lr)

    def state_dict(self):
        keys = ("last_epoch", "_step_count", "base_lrs", "_last_lr") + self.settings
        return {key: _plain(getattr(self, key)) for key in keys}

    def load_state_dict(self, state_dict):
        """Restore what state_dict() returned (or numpy.load read back)."""
        for key, value in state_dict.items():
            setattr(self, key, _plain(value))


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
        return [group["lr"] * factor for group in self.optimizer.param_groups]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * last_epoch / T_max)) / 2: from
    base_lr down to eta_min in T_max epochs (and back up in the next T_max, as torch)."""

    settings = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        cosine = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * cosine for base in self.base_lrs]


class ExtendableCosineLR(CosineAnnealingLR):
    """CosineAnnealingLR whose remaining length can change part-way, for a run resumed
    with more (or fewer) epochs than it was laid out for.

    The rate is eta_min + (base_lr - eta_min) * (1 + cos(pi * phase)) / 2, where the
    phase runs linearly from `from_phase` at epoch `from_epoch` to 1 at epoch T_max. A
    new schedule has from_epoch 0 and from_phase 0: phase = last_epoch / T_max, and every
    rate equals CosineAnnealingLR's bit for bit. extend(T_max) keeps the phase reached so
    far and stretches the rest of the half-cosine to end at the new T_max: the rate never
    jumps, keeps decreasing, and reaches eta_min at the new last epoch (where
    CosineAnnealingLR with the old T_max would hit eta_min early and climb back up)."""

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
        # pi * p + pi * (1 - p) * (e - k) / (T - k) is pi * e / T exactly when p = k = 0.
        p, k = self.from_phase, self.from_epoch
        angle = math.pi * p + math.pi * (1 - p) * (self.last_epoch - k) / (self.T_max - k)
        cosine = (1 + math.cos(angle)) / 2
        return [self.eta_min + (base - self.eta_min) * cosine for base in self.base_lrs]
