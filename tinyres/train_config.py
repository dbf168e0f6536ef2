"""What a training run is, and what each of its settings accepts.

TrainConfig holds every setting of a run. validate_config() checks them all before any
work (numbers in range, known names, writable output paths, a figure format matplotlib
writes) and resume_checkpoint() checks that a checkpoint comes from a run with the same
architecture and configuration (RESUME_FIELDS), listing every difference. Both raise
ConfigError naming the field, which the command line turns into a usage error naming
the option.
"""
import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from tinyres.backend import check_device
from tinyres.checkpoint import CheckpointError, load_checkpoint
from tinyres.models import ARCHITECTURES

DATASETS = ("digits", "mnist", "synthetic", "cifar10")
SCHEDULES = ("cosine", "multistep")
SHORTCUTS = ("A", "B", "C", None)
METRICS_FORMATS = (".json", ".csv")
# What a checkpoint's run was and must stay: a resume that asks for anything else is
# refused. The others (epochs, device, paths, printing) may change between calls.
RESUME_FIELDS = ("model", "shortcut", "shortcut_scale", "data", "subset", "upsample",
                 "augment", "batch_size", "lr", "momentum", "weight_decay", "nesterov",
                 "schedule", "milestones", "seed")


@dataclass
class TrainConfig:
    """Everything a run depends on. `epochs` is the run's total length (the schedule is
    laid out over it), at least 1; `stop_after` ends this call early, after that epoch,
    as an interruption would. `subset` keeps only the first n training samples (None:
    all). validate_config() says what each field accepts."""
    model: str = "resnet20"
    data: str = "digits"
    shortcut: str = "A"              # 'A', 'B', 'C' or None (the plain twin)
    shortcut_scale: float = 1.0
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"         # 'cosine' or 'multistep'
    milestones: tuple = None         # multistep epochs; default half and three quarters
    device: str = "cpu"
    seed: int = 0
    augment: bool = True
    upsample: int = 1                # nearest-neighbour factor for small images
    subset: int = None
    data_root: str = None            # the folder holding cifar-10-batches-py/
    eval_batch_size: int = 256
    save: str = None
    resume: str = None
    metrics: str = None
    figure: str = None
    quiet: bool = False
    stop_after: int = None


# ----- checking a config -------------------------------------------------------------------
class ConfigError(ValueError):
    """A TrainConfig field with a value the run cannot use; `field` names it."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_int(config, name, low, high=None, optional=False):
    value = getattr(config, name)
    if optional and value is None:
        return
    in_range = _is_int(value) and value >= low and (high is None or value <= high)
    if not in_range:
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(name, f"{name} must be an integer {bound}"
                          f"{' (or None: all)' if optional else ''}, got {value!r}")


def _check_float(config, name, low=None):
    value = getattr(config, name)
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value) and (low is None or value >= low)
    if not ok:
        bound = f" >= {low}" if low is not None else ""
        raise ConfigError(name, f"{name} must be a finite number{bound}, got {value!r}")


def _check_choice(config, name, choices):
    if getattr(config, name) not in choices:
        raise ConfigError(name, f"{name} must be one of {list(choices)}, got "
                                f"{getattr(config, name)!r}")


def writable_problem(path):
    """Why a file cannot be written at `path` (None when it can): the path is a folder,
    or its folder cannot be created or written. Creates nothing."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if os.path.isdir(path):
        return f"{path!r} is a folder, not a file"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path!r} exists and is not writable"
    folder = os.path.dirname(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        return f"cannot create a folder for {path!r}: {folder!r} is a file"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot write to folder {folder!r}"
    return None


def figure_formats():
    """The file formats matplotlib can save (extensions without the dot)."""
    from matplotlib.backend_bases import FigureCanvasBase
    return sorted(FigureCanvasBase.get_supported_filetypes())


def _check_outputs(config):
    for name in ("save", "metrics", "figure"):
        path = getattr(config, name)
        if path is None:
            continue
        problem = writable_problem(path)
        if problem:
            raise ConfigError(name, f"{name}: {problem}")
    if config.metrics and os.path.splitext(config.metrics)[1].lower() not in METRICS_FORMATS:
        raise ConfigError("metrics", f"metrics {config.metrics!r}: unknown format; the "
                                     f"file name must end in one of {list(METRICS_FORMATS)}")
    if config.figure:
        ext = os.path.splitext(config.figure)[1][1:].lower()
        if ext not in figure_formats():
            raise ConfigError("figure", f"figure {config.figure!r}: unknown format "
                                        f"{ext or '(no extension)'!r}; matplotlib writes "
                                        f"{', '.join(figure_formats())}")


def _check_cifar_root(root):
    """data_root must hold the extracted CIFAR-10 batches."""
    from tinyres.data.datasets import CIFAR_TEST_FILES, CIFAR_TRAIN_FILES, cifar_folder
    needs = "data 'cifar10' needs data_root, the folder holding cifar-10-batches-py/"
    if not root:
        raise ConfigError("data_root", f"{needs}; got {root!r}")
    try:
        folder = cifar_folder(root)
    except FileNotFoundError as err:
        raise ConfigError("data_root", f"{needs}: {err}") from err
    missing = [name for name in CIFAR_TRAIN_FILES + CIFAR_TEST_FILES
               if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise ConfigError("data_root", f"{needs}: {folder!r} lacks {missing}")


def validate_config(config):
    """Raise ConfigError (naming the field) for any value the run cannot use, before any
    work: numbers in range, known names, writable output paths, a known figure format."""
    _check_choice(config, "model", sorted(ARCHITECTURES))
    _check_choice(config, "data", DATASETS)
    _check_choice(config, "shortcut", SHORTCUTS)
    _check_choice(config, "schedule", SCHEDULES)
    _check_float(config, "shortcut_scale")
    for name in ("lr", "momentum", "weight_decay"):
        _check_float(config, name, low=0)
    for name in ("epochs", "batch_size", "eval_batch_size", "upsample"):
        _check_int(config, name, 1)
    _check_int(config, "subset", 1, optional=True)
    _check_int(config, "stop_after", 1, optional=True)
    _check_int(config, "seed", 0, 2 ** 32 - 1)
    if config.nesterov and config.momentum <= 0:
        raise ConfigError("nesterov", "nesterov needs a momentum > 0")
    if config.milestones is not None and not all(_is_int(m) and m >= 1
                                                 for m in config.milestones):
        raise ConfigError("milestones", f"milestones must be epochs >= 1, got "
                                        f"{config.milestones!r}")
    try:
        check_device(config.device)
    except (ValueError, RuntimeError) as err:
        raise ConfigError("device", str(err)) from err
    if config.data == "cifar10":
        _check_cifar_root(config.data_root)
    _check_outputs(config)


# ----- checking a resume -------------------------------------------------------------------
def _comparable(value):
    return tuple(value) if isinstance(value, list) else value


def config_differences(stored, config):
    """'field: checkpoint X, this run Y' for each RESUME_FIELDS entry that differs."""
    asked, absent = asdict(config), "(absent)"
    return [f"{name}: checkpoint {stored.get(name, absent)!r}, this run {asked[name]!r}"
            for name in RESUME_FIELDS
            if _comparable(stored.get(name, absent)) != _comparable(asked[name])]


def resume_checkpoint(config):
    """The checkpoint config.resume names, verified and checked against `config`: raises
    CheckpointError for a bad file, ConfigError ('resume') for one from another run."""
    path = config.resume
    ckpt = load_checkpoint(path)
    stored = ckpt.extra.get("config")
    needed = {"optimizer": ckpt.optimizer, "scheduler": ckpt.scheduler,
              "config": isinstance(stored, dict) and _is_int(stored.get("epochs")),
              "generators": all(k in ckpt.rng_states for k in ("loader", "augment", "numpy"))}
    absent = [name for name, present in needed.items() if not present]
    if absent:
        raise CheckpointError(f"checkpoint {path!r} cannot resume a run: it holds no "
                              f"{', '.join(absent)} (it was not written by Trainer.save)")
    differences = config_differences(stored, config)
    if differences:
        raise ConfigError("resume", f"cannot resume from {path!r}: it was trained with another "
                                    f"configuration: " + "; ".join(differences))
    if config.epochs < ckpt.epoch:
        raise ConfigError("epochs", f"epochs {config.epochs} is fewer than the {ckpt.epoch} "
                                    f"epochs checkpoint {path!r} has already trained")
    finished = ckpt.epoch >= stored["epochs"]
    if config.schedule == "cosine" and finished and config.epochs > ckpt.epoch:
        raise ConfigError("epochs", f"checkpoint {path!r} finished its cosine schedule at "
                                    f"epoch {ckpt.epoch}: its learning rate is 0, so "
                                    f"epochs {config.epochs} would train no further; start "
                                    f"a new run (or resume before the end)")
    return ckpt
