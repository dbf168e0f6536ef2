"""The degradation problem (He et al. 2015, Fig. 1 and 6): a deeper plain network trains
worse than a shallower one, so the extra error is not overfitting; the residual twin of
the same depth, trained on the same data with the same budget, does not degrade.

    from tinyres.experiments import degradation
    result = degradation.run(quick=True)
    print(result["table"])

Each depth 6n+2 is built twice, CifarResNet(n, shortcut=None) (plain) and
CifarResNet(n, shortcut='A') (residual), from the same seed, and trained on the same
digits with the same SGD budget. The table reports the final training loss and error
(measured in eval mode on the whole training set, after training) and the test error.
"""
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
    curve = fit(model, x, y, epochs, lr=lr, seed=seed)
    train_loss, train_err = evaluate(model, x, y)
    test_loss, test_err = evaluate(model, x_test, y_test)
    return dict(depth=6 * n + 2, net="plain" if shortcut is None else "residual",
                curve=curve, train_loss=train_loss, train_error=train_err,
                test_error=test_err)


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
    ax_depth.set(xlabel="layers", ylabel="final training error (%)")
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
             100 * r["test_error"]) for r in runs]
    table = format_table(("net", "layers", "train loss", "train err %", "test err %"), rows,
                         title=f"degradation: {len(x)} training digits, {s['epochs']} epochs, "
                               f"seed {seed}")
    print(table)
    return dict(table=table, runs=runs, figure=plot(runs, out_dir), settings=s, seed=seed)
