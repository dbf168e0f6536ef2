"""Lesion study (Veit, Wilber and Belongie 2016, "Residual Networks Behave Like
Ensembles of Relatively Shallow Networks"): delete one block from a trained network at
test time and see what it costs. A resnet's output is a sum over many paths of different
lengths; removing a block removes only the paths through it, and the error rises a
little. A plain network is one single path; removing any layer breaks it.

    from tinyres.experiments import lesion
    print(lesion.run(quick=True)["table"])

A residual CifarResNet and its plain twin are trained on the same digits with the same
budget; then each stride-1 block whose input and output shapes agree is replaced, one
at a time, by the identity (for the resnet that is exactly its shortcut: y = x), and
the test error is measured in eval mode.
"""
import numpy as np

import tinyres
from tinyres import nn
from tinyres.experiments.common import digits, evaluate, fit, format_table, new_figure, \
    save_figure
from tinyres.models import CifarResNet

QUICK = dict(blocks=3, n_train=512, epochs=6, lr=0.05)
FULL = dict(blocks=9, n_train=None, epochs=30, lr=0.05)


def deletable_blocks(model):
    """(stage name, stage, index) of every block that can be replaced by the identity:
    stride 1 and as many channels out as in."""
    found = []
    for stage_name in ("layer1", "layer2", "layer3"):
        stage = getattr(model, stage_name)
        for i, block in enumerate(stage):
            if block.stride == 1 and block.conv1.in_channels == block.conv2.out_channels:
                found.append((stage_name, stage, i))
    return found


def lesion_errors(model, x_test, y_test):
    """Test error with each deletable block replaced by nn.Identity in turn, as a list of
    (block name, error); the model is restored afterwards."""
    errors = []
    for stage_name, stage, i in deletable_blocks(model):
        block = stage[i]
        stage[i] = nn.Identity()
        errors.append((f"{stage_name}.{i}", evaluate(model, x_test, y_test)[1]))
        stage[i] = block
    return errors


def train_and_lesion(shortcut, s, data, seed):
    """Train one twin, then lesion it: baseline test error and per-block errors."""
    x, y, x_test, y_test = data
    tinyres.manual_seed(seed)
    model = CifarResNet(s["blocks"], num_classes=10, shortcut=shortcut)
    fit(model, x, y, s["epochs"], lr=s["lr"], seed=seed)
    base = evaluate(model, x_test, y_test)[1]
    deleted = lesion_errors(model, x_test, y_test)
    return dict(net="plain" if shortcut is None else "residual", base_error=base,
                deleted=deleted,
                mean_increase=float(np.mean([e for _, e in deleted]) - base))


def plot(runs, out_dir):
    """Test error after deleting each block, one line per net, the intact error dashed."""
    fig, (ax,) = new_figure(1, width=6)
    for r, style in zip(runs, ("o-", "s-")):
        names = [name for name, _ in r["deleted"]]
        line, = ax.plot(names, [100 * e for _, e in r["deleted"]], style, label=r["net"])
        ax.axhline(100 * r["base_error"], ls="--", color=line.get_color())
    ax.set(xlabel="deleted block", ylabel="test error (%)", ylim=(0, 100),
           title="dashed: nothing deleted")
    ax.legend()
    return save_figure(fig, out_dir, "lesion")


def run(quick=False, seed=0, out_dir=None):
    """Train both twins, delete blocks one at a time; print and return the table, the
    numbers ('runs': per net the intact error, per-block errors and the mean increase)
    and the figure's path."""
    s = QUICK if quick else FULL
    data = digits(s["n_train"])
    runs = [train_and_lesion(shortcut, s, data, seed) for shortcut in ("A", None)]
    names = [name for name, _ in runs[0]["deleted"]]
    rows = [("none", *(100 * r["base_error"] for r in runs))]
    rows += [(name, *(100 * dict(r["deleted"])[name] for r in runs)) for name in names]
    rows.append(("mean increase", *(100 * r["mean_increase"] for r in runs)))
    table = format_table(("deleted block", "residual test err %", "plain test err %"), rows,
                         title=f"lesion: CifarResNet({s['blocks']}) and its plain twin, "
                               f"{len(data[0])} training digits, {s['epochs']} epochs, "
                               f"seed {seed}")
    print(table)
    return dict(table=table, runs=runs, figure=plot(runs, out_dir), settings=s, seed=seed)
