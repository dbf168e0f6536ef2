"""LRScheduler, the base of every learning-rate schedule (torch.optim.lr_scheduler's).

A scheduler sets `group['lr']` of its optimizer's groups; call `scheduler.step()` once per
epoch (or per batch for OneCycleLR), after `optimizer.step()`. Creating one performs the
first step (last_epoch 0) and records each group's starting rate as
`group['initial_lr']` (the `base_lrs`). As in torch, most schedules are chainable: get_lr()
computes the new rate from the group's current one (so that two schedulers on one
optimizer compose), and a few have a closed form used by the deprecated step(epoch).

state_dict() holds numbers, strings and lists only (an .npz keeps them): last_epoch,
_step_count, base_lrs, _last_lr and the schedule's own settings (`settings`). torch saves
its whole __dict__; the values that matter for resuming are the same.
"""
import warnings

import numpy as np

from tinyres.optim.optimizer import Optimizer

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being deprecated "
    "where possible. Please use `scheduler.step()` to step the scheduler. During the "
    "deprecation, if epoch is different from None, the closed form is used instead of the "
    "new chainable form, where available.")


def plain(value):
    """Python numbers and lists from what numpy.load gives back (0-d and 1-d arrays)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.item() if value.ndim == 0 else value.tolist()
    return list(value) if isinstance(value, tuple) else value


def per_group(name, optimizer, value):
    """One value per parameter group: a list of the right length, or one value repeated."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(optimizer.param_groups):
            raise ValueError(f"{name} must have the same length as optimizer.param_groups. "
                             f"{name} has {len(value)} values, param_groups has "
                             f"{len(optimizer.param_groups)}.")
        return list(value)
    return [value] * len(optimizer.param_groups)


def current_lrs(optimizer):
    """Every group's rate now, in order."""
    return [group["lr"] for group in optimizer.param_groups]


class LRScheduler:
    """Base class: subclasses define get_lr(), the rates for the new last_epoch."""

    settings = ()     # the subclass's hyper-parameters saved in state_dict()
    _is_initial = False

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] "
                               "when resuming scheduler with last_epoch >= 0.")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self):
        """The step every scheduler takes when it is made (last_epoch -1 -> 0)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self):
        raise NotImplementedError

    def step(self, epoch=None):
        """Advance one epoch and set the optimizer's learning rates. step(epoch) is
        deprecated (as in torch): it jumps to `epoch`, through the closed form if any."""
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch=None):
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            closed = getattr(self, "_get_closed_form_lr", None)
            values = closed() if closed is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = current_lrs(self.optimizer)

    def get_last_lr(self):
        """The learning rates set by the last step(), one per group."""
        return list(self._last_lr)

    def state_dict(self):
        """Numbers and lists: where the schedule is and its settings."""
        keys = ("last_epoch", "_step_count", "base_lrs", "_last_lr") + self.settings
        return {key: plain(getattr(self, key)) for key in keys}

    def load_state_dict(self, state_dict):
        """Restore what state_dict() returned (or numpy.load read back)."""
        for key, value in state_dict.items():
            setattr(self, key, plain(value))
