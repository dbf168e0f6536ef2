"""The command line: `python -m tinyres <command> [options]`.

    python -m tinyres train                       # resnet20 on the 8x8 digits, ~30 s on CPU
    python -m tinyres train --shortcut none --epochs 5 --save run.npz
    python -m tinyres train --resume run.npz --epochs 10
    python -m tinyres demo                        # a one-epoch smoke run

Each command is a pair of functions, one adding its options to an argparse parser and one
running it with the parsed arguments, listed once in COMMANDS. Adding a command is
writing those two functions and one line there.

A run function checks every option before any work (through tinyres.train_config for
train and demo) and raises UsageError for a bad one; main() reports it as argparse does,
naming the option, with exit code 2. So a bad --figure format, an unwritable --metrics
path or --epochs 0 fails at once, not after the training.
"""
import argparse
import os
import sys
import time
from dataclasses import fields

import numpy as np

import tinyres
import tinyres.nn.functional as F
from tinyres.checkpoint import CheckpointError
from tinyres import runtime
from tinyres.probes import GradientProbe
from tinyres.train import Trainer
from tinyres.train_config import DATASETS, ConfigError, TrainConfig, writable_problem


# ----- train ---------------------------------------------------------------------------
FIRST_COMPILE = "45 s"       # measured: benchmarks/README.md, "The first run"


def add_train_arguments(parser):
    """The options of `train` (and `demo`), defaulting to TrainConfig's values."""
    d = TrainConfig()
    a = parser.add_argument
    a("--model", default=d.model, help="architecture, e.g. resnet20, resnet56 (default "
      "%(default)s)")
    a("--data", default=d.data, choices=DATASETS, help="dataset (default %(default)s)")
    a("--data-root", default=d.data_root, help="folder holding cifar-10-batches-py/ "
      "(needed by --data cifar10)")
    a("--epochs", type=int, default=d.epochs,
      help="total length of the run in epochs, at least 1 (default %(default)s); the "
           "schedule is laid out over it. With --resume: the new total (not a number of "
           "extra epochs); a cosine schedule then continues from the rate it has reached "
           "and decreases to 0 at the new last epoch, never climbing back (a run whose cosine "
           "has ended is refused), and multistep keeps its milestones")
    a("--batch-size", type=int, default=d.batch_size,
      help="training images per SGD step, at least 1 (default %(default)s)")
    a("--lr", type=float, default=d.lr, help="initial learning rate, >= 0 (default "
      "%(default)s)")
    a("--momentum", type=float, default=d.momentum, help="SGD momentum, >= 0 (default "
      "%(default)s)")
    a("--weight-decay", type=float, default=d.weight_decay,
      help="L2 weight decay added to the gradients, >= 0 (default %(default)s)")
    a("--schedule", default=d.schedule, choices=("cosine", "multistep"),
      help="learning-rate schedule: cosine to 0, or /10 at half and three quarters of "
           "the epochs (default %(default)s)")
    a("--device", default=d.device, help="cpu or cuda (default %(default)s)")
    a("--seed", type=int, default=d.seed, help="seed of the initial weights, the shuffle "
      "and the augmentation, 0 to 2**32-1 (default %(default)s); the same seed gives the "
      "same run bit for bit on the CPU")
    a("--shortcut", default=d.shortcut, choices=("A", "B", "C", "none"),
      help="CIFAR ResNet shortcut option; 'none' builds the plain twin (default "
           "%(default)s)")
    a("--shortcut-scale", type=float, default=d.shortcut_scale,
      help="lambda in y = F(x) + lambda * x (default %(default)s)")
    a("--upsample", type=int, default=d.upsample,
      help="nearest-neighbour factor for the images, at least 1 (2: 8x8 -> 16x16)")
    a("--subset", type=int, default=d.subset,
      help="use only the first N training images, 1 to the training set's size "
           "(default: all)")
    a("--no-augment", dest="augment", action="store_false", help="no random crops/flips")
    a("--save", default=d.save, help="checkpoint .npz written after every epoch")
    a("--resume", default=d.resume,
      help="checkpoint to continue from; refused if it was trained with other options "
           "(model, shortcut, data, batch size, lr, schedule, seed, ...)")
    a("--metrics", default=d.metrics, help="per-epoch metrics, a .json or .csv file")
    a("--figure", default=d.figure, help="loss/accuracy curves, e.g. curves.png (any "
      "format matplotlib writes: png, pdf, svg, ...)")
    a("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    a("--distributed", action="store_true",
      help="data-parallel over the ranks of an MPI job: mpiexec -n 2 python -m tinyres "
           "train --distributed ... (as root add --allow-run-as-root to mpiexec); "
           "--batch-size is per rank, rank 0 alone prints and writes")
    a("--no-tune", action="store_true",
      help="leave this process's malloc and Numba thread-pool settings alone (by default "
           "train calls tinyres.runtime.tune() and prints what it changed)")


def config_from_args(args):
    """A TrainConfig from parsed arguments (those that name one of its fields)."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if values.get("shortcut") == "none":
        values["shortcut"] = None
    return TrainConfig(**values)


def report(trainer, shown=16):
    """What the model learned: test accuracy, some predictions against the labels, and
    the gradient split between shortcut and branch on one test batch."""
    _, test_acc = trainer.evaluate()
    images, labels = trainer.test_set.get_batch(np.arange(min(shown, len(trainer.test_set))))
    predicted = trainer.predict(images)
    print(f"learned: test accuracy {100 * test_acc:.1f}% (chance "
          f"{100 / trainer.num_classes:.1f}%) on {len(trainer.test_set)} held-out images")
    print(f"  predicted {' '.join(map(str, predicted))}")
    print(f"  labels    {' '.join(map(str, labels))}")
    if trainer.config.shortcut is None or "resnet" not in trainer.config.model:
        print("(no shortcuts in this model: no shortcut-gradient table)")
        return
    trainer.model.eval()
    device = trainer.config.device
    with GradientProbe(trainer.model) as probe:
        loss = F.cross_entropy(trainer.model(tinyres.tensor(images, device=device)),
                               tinyres.tensor(labels, device=device))
        loss.backward()
    trainer.model.zero_grad()
    print("\ngradient through each block's shortcut vs its residual branch (one test batch):")
    print(probe.summary())


class UsageError(Exception):
    """A bad option value: main() reports it as argparse does (exit code 2)."""

    def __init__(self, option, message):
        super().__init__(f"argument {option}: {message}")


def option_name(field):
    """The command-line option that sets TrainConfig `field`."""
    return {"augment": "--no-augment"}.get(field, "--" + field.replace("_", "-"))


def build_trainer(config, trainer_class=Trainer):
    """A Trainer for `config`, every option checked first (see validate_config): a bad
    value, a bad --resume file or one from another run is a UsageError, before any
    training."""
    try:
        return trainer_class(config)
    except ConfigError as err:
        raise UsageError(option_name(err.field), str(err)) from err
    except CheckpointError as err:
        raise UsageError("--resume", str(err)) from err


def announce_compilation(config):
    """Say so when the CPU kernels are about to be compiled (the first run only)."""
    if config.device != "cpu" or tinyres.kernels.chosen() == "reference":
        return
    warm, folder = runtime.compiled_kernel_cache()
    if not warm:
        print(f"compiling the CPU kernels, once: about {FIRST_COMPILE} on 2 cores "
              f"(Numba caches them in {folder})")


def run_train(args):
    """Train, print the epochs, then what the model learned (--distributed: on every rank
    of the MPI job, rank 0 printing)."""
    if getattr(args, "distributed", False):
        from tinyres.train_distributed import DistributedTrainer, rank_zero_prints
        with rank_zero_prints():
            return train_and_report(args, DistributedTrainer)
    return train_and_report(args, Trainer)


def train_and_report(args, trainer_class):
    """run_train's work with the given Trainer class."""
    config = config_from_args(args)
    if not args.no_tune:
        print("process settings (tinyres.runtime.tune(); --no-tune skips): "
              + "; ".join(runtime.tune()))
    announce_compilation(config)
    trainer = build_trainer(config, trainer_class)
    print(f"{config.model} (shortcut {config.shortcut}) on {config.data}: "
          f"{trainer.num_parameters:,} parameters; {len(trainer.train_set)} training, "
          f"{len(trainer.test_set)} test images of shape {trainer.test_set.images.shape[1:]}")
    if trainer.start_epoch:
        print(f"resumed from {config.resume} after epoch {trainer.start_epoch}")
    if trainer.start_epoch >= config.epochs:
        print(f"nothing to train: the checkpoint has done all {config.epochs} epochs "
              f"(give a larger --epochs to train on)")
    start = time.perf_counter()
    trainer.fit()
    print(f"trained in {time.perf_counter() - start:.1f}s")
    report(trainer)
    return 0


def add_demo_arguments(parser):
    """`demo` takes the train options, with a one-epoch run on 256 digits as defaults."""
    add_train_arguments(parser)
    parser.set_defaults(epochs=1, subset=256, batch_size=64)


# ----- experiment ------------------------------------------------------------------------
def add_experiment_arguments(parser):
    """The options of `experiment`: which one, how big, where the figure goes."""
    from tinyres.experiments import EXPERIMENTS
    parser.add_argument("name", choices=sorted(EXPERIMENTS), help="the experiment")
    parser.add_argument("--quick", action="store_true", help="the seconds-on-a-CPU version")
    parser.add_argument("--out", default=None, help="figure folder (default runs/experiments)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every twin's weights and shuffle, 0 to 2**31-1 "
                             "(some experiments also use the next few seeds; default "
                             "%(default)s)")


def check_experiment_args(args):
    """UsageError for a seed out of range or an --out folder that cannot be written."""
    if not 0 <= args.seed <= 2 ** 31 - 1:
        raise UsageError("--seed", f"seed must be an integer from 0 to 2**31-1, got "
                                   f"{args.seed}")
    if args.out is not None:
        problem = writable_problem(os.path.join(args.out, f"{args.name}.png"))
        if problem:
            raise UsageError("--out", problem)


def run_experiment(args):
    """Run one experiment; it prints its table and saves its figure."""
    from tinyres.experiments import run
    check_experiment_args(args)
    result = run(args.name, quick=args.quick, seed=args.seed, out_dir=args.out)
    print(f"figure: {result['figure']}")
    return 0


# ----- the command table -----------------------------------------------------------------
COMMANDS = [
    # (name, help, add its arguments, run it)
    ("train", "train a ResNet and report what it learned", add_train_arguments, run_train),
    ("demo", "a one-epoch smoke run of train", add_demo_arguments, run_train),
    ("experiment", "rerun a ResNet paper result (--quick: seconds)", add_experiment_arguments,
     run_experiment),
]


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tinyres",
                                     description="tinyres: ResNets from scratch")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, help_text, add_arguments, run in COMMANDS:
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command)
        command.set_defaults(run=run, command_parser=command)
    return parser


def main(argv=None):
    """Parse `argv` (default sys.argv[1:]) and run the chosen command; its exit code.
    A bad option value exits with code 2 and argparse's usage message, before any work."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as err:
        args.command_parser.error(str(err))


if __name__ == "__main__":
    sys.exit(main())
