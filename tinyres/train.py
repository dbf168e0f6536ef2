"""Training: SGD with momentum on a CIFAR-style ResNet, evaluated each epoch, resumable.

    from tinyres.train import TrainConfig, train
    history = train(TrainConfig(model="resnet20", data="digits", epochs=10))
    history[-1]["test_acc"]

`train(config)` builds a Trainer and calls fit(). A Trainer holds the model, the
optimizer, the schedule and both loaders; it writes a checkpoint after every epoch when
`config.save` is set, and `config.resume` restores everything a run depends on (weights,
optimizer and schedule state, the loader's shuffle generator, the augmentation generator
and NumPy's global generator), so a resumed run continues exactly as if never stopped.

Nothing runs on a config that cannot finish: the Trainer first checks every field and,
when resuming, the checkpoint's stored configuration against this one (see
tinyres.train_config), before any data is loaded.

Resuming with a different `epochs` continues the schedule from where it is: the cosine
keeps the phase it has reached and stretches (or squeezes) the rest of its half-period to
end at the new last epoch, so the rate never jumps back up; multistep keeps the
milestones it was laid out with (later epochs run at the last rate). With the same
`epochs` a resumed run is the uninterrupted one, bit for bit.

A training step reads nothing from the device: the summed loss and the correct
predictions accumulate where the model runs (RunningTotals) and are read once per epoch,
and once every BAR_EVERY steps while a progress bar is shown; the loss's target checks are
read with them (tinyres.cuda.check_pending), so a bad label raises by the end of the epoch.
On a GPU the loaders copy each batch through pinned host memory on a side stream.
"""
import csv
import json
import os
import sys
import time
from dataclasses import asdict, replace

import numpy as np
from tqdm.auto import tqdm

import tinyres
import tinyres.nn.functional as F
from tinyres import backend, data
from tinyres.checkpoint import numpy_rng_state, save_checkpoint, set_numpy_rng_state
from tinyres.models import count_parameters, get_model
from tinyres.optim import SGD
from tinyres.optim.lr_scheduler import ExtendableCosineLR, MultiStepLR
from tinyres.train_config import (DATASETS, ConfigError, TrainConfig, resume_checkpoint,
                                  validate_config)

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
BAR_EVERY = 20          # steps between the progress bar's reads of the running totals


# ----- data ------------------------------------------------------------------------------
def _arrays(config):
    """(train images, train labels, test images, test labels) for a non-CIFAR dataset."""
    if config.data == "digits":
        images, labels = data.load_digits()
    elif config.data == "mnist":
        images, labels = data.load_mnist_subset()
    elif config.data == "synthetic":
        images, labels = data.synthetic(n=1024, classes=4, size=8, channels=3, seed=0)
    else:
        raise ValueError(f"unknown dataset {config.data!r}; expected one of {DATASETS}")
    images = data.upsample(data.to_rgb(images), config.upsample)
    train_idx, test_idx = data.split_indices(len(images), test_fraction=0.2, seed=0)
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


def _augmentation(config, size, rng):
    """The random part of the training transform ([] when augmentation is off)."""
    if not config.augment:
        return []
    steps = [data.RandomCrop(size, padding=max(1, size // 8), rng=rng)]
    if config.data == "cifar10":          # digits and blobs are not mirror-symmetric
        steps.append(data.RandomHorizontalFlip(0.5, rng=rng))
    return steps


def _check_subset(config, available):
    if config.subset > available:
        raise ConfigError("subset", f"subset {config.subset} is more than the {available} "
                                    f"training images of {config.data!r}")


def build_datasets(config, aug_rng):
    """(train set, test set, number of classes); augmentation draws from aug_rng."""
    if config.data == "cifar10":
        if not config.data_root:
            raise ValueError("data 'cifar10' needs data_root (--data-root), the folder "
                             "holding cifar-10-batches-py/")
        norm = data.Normalize(CIFAR_MEAN, CIFAR_STD)
        train_set = data.CIFAR10(config.data_root, train=True)
        test_set = data.CIFAR10(config.data_root, train=False, transform=norm)
        train_set.transform = data.Compose(_augmentation(config, 32, aug_rng) + [norm])
        if config.subset:
            _check_subset(config, len(train_set))
            train_set = data.ArrayDataset(train_set.images[:config.subset],
                                          train_set.labels[:config.subset],
                                          train_set.transform, scale=1 / 255)
        return train_set, test_set, 10
    x_train, y_train, x_test, y_test = _arrays(config)
    if config.subset:
        _check_subset(config, len(x_train))
        x_train, y_train = x_train[:config.subset], y_train[:config.subset]
    norm = data.Normalize(*data.channel_stats(x_train))
    steps = _augmentation(config, x_train.shape[-1], aug_rng) + [norm]
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return (data.ArrayDataset(x_train, y_train, data.Compose(steps)),
            data.ArrayDataset(x_test, y_test, norm), num_classes)


# ----- the trainer -------------------------------------------------------------------------
def _show_bars(config):
    return not config.quiet and sys.stderr.isatty()


class Trainer:
    """Model, optimizer, schedule and loaders for one config; fit() runs the epochs."""

    def __init__(self, config):
        validate_config(config)
        ckpt = resume_checkpoint(config) if config.resume else None
        self.config = config
        tinyres.manual_seed(config.seed)              # NumPy's global generator: init
        loader_seed, aug_seed = np.random.SeedSequence(config.seed).spawn(2)
        self.aug_rng = np.random.default_rng(aug_seed)
        self.train_set, self.test_set, self.num_classes = build_datasets(config, self.aug_rng)
        pin = backend.as_device(config.device).type == "cuda"
        self.train_loader = data.DataLoader(self.train_set, config.batch_size, shuffle=True,
                                            seed=loader_seed, device=config.device,
                                            pin_memory=pin)
        self.test_loader = data.DataLoader(self.test_set, config.eval_batch_size,
                                           device=config.device, pin_memory=pin)
        self.model = get_model(config.model, num_classes=self.num_classes,
                               **self._model_options()).to(config.device)
        self.optimizer = SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                             weight_decay=config.weight_decay, nesterov=config.nesterov)
        self.scheduler = self._make_scheduler()
        self.history = []
        self.start_epoch = 0
        if ckpt is not None:
            self.restore(ckpt)

    def _model_options(self):
        if not self.config.model.startswith("resnet") or self.config.model in (
                "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
            return {}
        return {"shortcut": self.config.shortcut, "shortcut_scale": self.config.shortcut_scale}

    def _make_scheduler(self):
        c = self.config
        if c.schedule == "cosine":
            return ExtendableCosineLR(self.optimizer, T_max=c.epochs)
        if c.schedule == "multistep":
            milestones = c.milestones or (c.epochs // 2, c.epochs * 3 // 4)
            return MultiStepLR(self.optimizer, milestones=milestones, gamma=0.1)
        raise ValueError(f"unknown schedule {c.schedule!r}; expected 'cosine' or 'multistep'")

    @property
    def num_parameters(self):
        return count_parameters(self.model)

    # ----- one epoch ------------------------------------------------------------------
    def train_epoch(self, epoch):
        """One pass over the training set; (mean loss, accuracy)."""
        total_loss, correct, seen = self.training_pass(epoch, self.model)
        return total_loss / seen, correct / seen

    def training_pass(self, epoch, module):
        """One pass of SGD steps through `module` (the model, or a wrapper of it such as
        DistributedDataParallel); (summed loss, correct predictions, images seen)."""
        self.model.train()
        totals, seen = RunningTotals(), 0
        shown = _show_bars(self.config)
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{self.config.epochs}",
                   leave=False, disable=not shown)
        for step, (images, labels) in enumerate(bar, start=1):
            logits = module(images)
            loss = F.cross_entropy(logits, labels)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            totals.add(loss, logits, labels)
            seen += len(labels.array)
            if shown and step % BAR_EVERY == 0:
                total_loss, correct = totals.read()
                bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        total_loss, correct = totals.read()
        return total_loss, correct, seen

    def evaluate(self, loader=None):
        """(mean loss, accuracy) over the test set, in eval mode without gradients."""
        self.model.eval()
        totals, seen = RunningTotals(), 0
        with tinyres.no_grad():
            for images, labels in loader or self.test_loader:
                logits = self.model(images)
                totals.add(F.cross_entropy(logits, labels), logits, labels)
                seen += len(labels.array)
        total_loss, correct = totals.read()
        return total_loss / seen, correct / seen

    def predict(self, images):
        """Predicted classes for a NumPy batch already transformed like the test set."""
        self.model.eval()
        with tinyres.no_grad():
            logits = self.model(tinyres.tensor(images, device=self.config.device))
        return logits.numpy().argmax(1)

    # ----- the run ----------------------------------------------------------------------
    def fit(self, log=print):
        """Train from start_epoch to config.epochs (or stop_after); the history."""
        c = self.config
        last = c.epochs if c.stop_after is None else min(c.epochs, c.stop_after)
        for epoch in range(self.start_epoch, last):
            start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss, train_acc = self.train_epoch(epoch)
            test_loss, test_acc = self.evaluate()
            self.scheduler.step()
            row = dict(epoch=epoch + 1, lr=lr, train_loss=train_loss, train_acc=train_acc,
                       test_loss=test_loss, test_acc=test_acc,
                       seconds=time.perf_counter() - start)
            self.history.append(row)
            if not c.quiet and log:
                log(format_row(row, c.epochs))
            self._after_epoch(epoch + 1)
        if c.figure and self.history:
            plot_history(self.history, c.figure)
        return self.history

    def _after_epoch(self, epochs_done):
        c = self.config
        if c.metrics:
            write_metrics(self.history, c.metrics, config=c)
        if c.save:
            self.save(c.save, epochs_done)

    # ----- checkpoints ---------------------------------------------------------------------
    def rng_states(self):
        return {"loader": self.train_loader.state_dict(),
                "augment": self.aug_rng.bit_generator.state, "numpy": numpy_rng_state()}

    def save(self, path, epochs_done):
        """A checkpoint after `epochs_done` epochs."""
        save_checkpoint(path, self.model, self.optimizer, self.scheduler, self.rng_states(),
                        epoch=epochs_done, extra={"history": self.history,
                                                  "config": asdict(self.config)})

    def resume(self, path):
        """Restore everything from the checkpoint at `path`, after checking that it comes
        from a run with this config (see resume_checkpoint); fit() then continues."""
        self.restore(resume_checkpoint(replace(self.config, resume=path)))

    def restore(self, ckpt):
        """Load a checked checkpoint: weights, optimizer, schedule, generators, history.
        With more (or fewer) epochs than the checkpoint's run had, the schedule continues
        from where it is to the new end (see continue_schedule)."""
        self.model.load_state_dict(ckpt.model)
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.scheduler.load_state_dict(ckpt.scheduler)
        continue_schedule(self.scheduler, self.config.epochs)
        self.train_loader.load_state_dict(ckpt.rng_states["loader"])
        self.aug_rng.bit_generator.state = ckpt.rng_states["augment"]
        set_numpy_rng_state(ckpt.rng_states["numpy"])
        self.history = list(ckpt.extra.get("history", []))
        self.start_epoch = ckpt.epoch


class RunningTotals:
    """The summed loss (float64, each batch's mean loss times its size) and the number of
    correct predictions, kept on the device of the logits: add() reads nothing, read()
    is one host read (and raises a pending target check, see tinyres.cuda.check_pending)."""

    def __init__(self):
        self.sums = None

    def add(self, loss, logits, labels):
        """Add a batch: its mean loss (a 0-d Tensor), logits (N, C) and labels (N,)."""
        xp = backend.get_array_module(logits.array)
        n = labels.array.shape[0]
        hits = (logits.array.argmax(1) == labels.array).sum()
        batch = xp.stack([loss.array.astype(np.float64) * n, hits.astype(np.float64)])
        self.sums = batch if self.sums is None else self.sums + batch

    def read(self):
        """(summed loss, correct predictions) as Python numbers."""
        if self.sums is None:
            backend.check_pending()
            return 0.0, 0
        total_loss, correct = backend.to_host(self.sums).tolist()
        backend.check_pending()
        return total_loss, int(correct)


def continue_schedule(scheduler, epochs):
    """Re-plan a restored schedule for a run now `epochs` long. Cosine laid out over
    another length: keep the phase reached and stretch (or squeeze) the rest of the
    half-cosine to end at `epochs`, so the rate keeps decreasing and never jumps back up.
    Multistep: unchanged (the milestones stay where they were; later epochs run at the
    last rate). The same length changes nothing: the resumed run is the uninterrupted
    one, bit for bit."""
    if isinstance(scheduler, ExtendableCosineLR) and scheduler.T_max != epochs \
            and epochs > scheduler.last_epoch:
        scheduler.extend(epochs)


def train(config):
    """Run a whole training as configured; returns the per-epoch history (dicts)."""
    return Trainer(config).fit()


# ----- reporting -------------------------------------------------------------------------
def format_row(row, epochs):
    """One epoch as a line of text."""
    return (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.4f}  "
            f"train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:5.1f}%  "
            f"test loss {row['test_loss']:.4f} acc {100 * row['test_acc']:5.1f}%  "
            f"({row['seconds']:.1f}s)")


def write_metrics(history, path, config=None):
    """The history as CSV (a path ending in .csv) or JSON {config, history}."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.lower().endswith(".csv"):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]) if history else ["epoch"])
            writer.writeheader()
            writer.writerows(history)
        return
    with open(path, "w") as f:
        json.dump({"config": asdict(config) if config else None, "history": history}, f,
                  indent=2)


def plot_history(history, path):
    """Loss and accuracy curves (train and test) against the epoch, saved to `path`."""
    from matplotlib.figure import Figure     # no pyplot: no global backend state
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(9, 3.5))
    for ax, key, title in zip(fig.subplots(1, 2), ("loss", "acc"), ("loss", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", label="train")
        ax.plot(epochs, [r[f"test_{key}"] for r in history], "s-", label="test")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)


__all__ = ["ConfigError", "RunningTotals", "TrainConfig", "Trainer", "build_datasets",
           "continue_schedule", "format_row", "plot_history", "train", "write_metrics"]
