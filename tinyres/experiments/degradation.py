"""The degradation problem (He et al. 2015, Fig. 1 and 6): a deeper plain network trains
worse than a shallower one, so the extra error is not overfitting; the residual twin of
the same depth, trained on the same data with the same budget, does not degrade.

    from tinyres.experiments import degradation
    result = degradation.run(quick=True)
    print(result["table"])

Each depth 6n+2 is built twice, CifarResNet(n, shortcut=None) (plain) and
CifarResNet(n, shortcut='A') (residual), from the same seed, and trained on the same
digits with the same SGD budget.

The table reports the training loss and error as the paper's curves do: measured during
training, over the last epoch, with batch norm using each batch's own statistics. Beside
them, the training error in eval mode after training (batch norm using its running
averages) and the test error, also in eval mode. The two training errors differ because
the running averages are exponential averages (momentum 0.1) over the last few dozen
steps, taken while the weights were still moving: for weights that change fast, as in a
deep plain net early in training, they describe earlier weights, and the mismatch grows
through the layers. Chance level for ten classes is 90% error and a loss of
ln 10 = 2.30.
"""
import math


import tinyres
from tinyres.experiments.common import (digits, evaluate, fit, format_table, new_figure,
                                        save_figure)
from tinyres.models import CifarResNet

QUICK = dict(blocks=(1, 5), n_train=512, epochs=6, lr=0.05)
FULL = dict(blocks=(3, 9), n_train=None, epochs=30, lr=0.05)


def train_twin(n, shortcut, x, y, x_test, y_test, epochs, lr, seed):
    """Train CifarResNet(n, shortcut) from `seed`; a dict of its curves and final errors."""
    tinyres.manual_seed(seed)
    model = CifarResNet(n, num_classes=10, shortcut=shortcut)
    errors = []
    curve = fit(model, x, y, epochs, lr=lr, seed=seed, errors=errors)
    eval_loss, eval_err = evaluate(model, x, y)
    test_loss, test_err = evaluate(model, x_test, y_test)
    return dict(depth=6 * n + 2, net="plain" if shortcut is None else "residual",
                curve=curve, error_curve=errors, train_loss=curve[-1],
                train_error=errors[-1], eval_train_loss=eval_loss,
                eval_train_error=eval_err, test_error=test_err)


def plot(runs, out_dir):
    """Training-loss curves (left) and final training error vs depth (right)."""
    fig, (ax_curve, ax_depth) = new_figure(2)
    for r in runs:
        style = "--" if r["net"] == "plain" else "-"
        ax_curve.plot(range(1, len(r["curve"]) + 1), r["curve"], style,
                      label=f"{r['net']}-{r['depth']}")
    ax_curve.set(xlabel="epoch", ylabel="training loss (during the epoch)", yscale="log")
    ax_curve.legend()
    for net, style in (("plain", "s--"), ("residual", "o-")):
        rows = [r for r in runs if r["net"] == net]
        ax_depth.plot([r["depth"] for r in rows], [100 * r["train_error"] for r in rows],
                      style, label=net)
    ax_depth.axhline(90, color="gray", lw=0.8, ls=":")
    ax_depth.set(xlabel="layers", ylabel="training error, last epoch (%)", ylim=(0, 100))
    ax_depth.legend()
    return save_figure(fig, out_dir, "degradation")


def run(quick=False, seed=0, out_dir=None):
    """Train plain and residual twins at each depth; print and return the table, the
    numbers ('runs': one dict per net) and the figure's path."""
    s = QUICK if quick else FULL
    x, y, x_test, y_test = digits(s["n_train"])
    runs = [train_twin(n, shortcut, x, y, x_test, y_test, s["epochs"], s["lr"], seed)
            for n in s["blocks"] for shortcut in (None, "A")]
    rows = [(r["net"], r["depth"], r["train_loss"], 100 * r["train_error"],
             r["eval_train_loss"], 100 * r["eval_train_error"], 100 * r["test_error"])
            for r in runs]
    table = format_table(
        ("net", "layers", "train loss", "train err %", "eval train loss", "eval train err %",
         "test err %"), rows,
        title=f"degradation: {len(x)} training digits, {s['epochs']} epochs, seed {seed}")
    table += (f"\ntrain loss and err: during the last epoch, batch norm on batch statistics "
              f"(as the paper's curves);\neval: after training, batch norm on its running "
              f"averages, which lag behind weights that\nwere still moving. Chance: "
              f"{100 * (1 - 1 / 10):.0f}% error, loss ln 10 = {math.log(10):.2f}.")
    print(table)
    return dict(table=table, runs=runs, figure=plot(runs, out_dir), settings=s, seed=seed)
