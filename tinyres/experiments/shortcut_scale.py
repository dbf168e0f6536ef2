"""The shortcut scale lambda (He et al. 2016, Identity Mappings, eq. 7-8): with
y = F(x) + lambda * x, the gradient reaching the input of a stack of k blocks is

    dL/dx_0 = dL/dx_k * prod_i (lambda + F_i'(x_i))  =  lambda^k * dL/dx_k   when F = 0,

so a lambda below 1 makes it vanish and above 1 explode, exponentially in depth; only
lambda = 1 passes it unchanged.

    from tinyres.experiments import shortcut_scale
    print(shortcut_scale.run(quick=True)["table"])

The law is measured on stacks of k BasicBlocks (16 channels, stride 1, float64) whose
residual branches are zero-initialised (the last BatchNorm weight is 0, so F = 0 and F'
= 0 exactly) and whose input is strictly positive (as after a ReLU, without exact zeros),
so every ReLU passes the shortcut path: |dL/dx_0| / |dL/dx_k| must equal lambda^k. The
same stacks with the branches switched on (He initialisation) show the F' term at work.
A short training run of CifarResNet(n, shortcut_scale=lambda) on the digits then shows
which lambdas still train.
"""
import numpy as np

import tinyres
from tinyres import nn
from tinyres.experiments.common import (digits, evaluate, fit, format_table, new_figure,
                                        save_figure)
from tinyres.models import CifarResNet
from tinyres.models.resnet import BasicBlock, init_weights

LAMBDAS = (0.5, 0.9, 1.0, 1.1, 1.5)
QUICK = dict(max_blocks=6, train_blocks=3, n_train=256, epochs=2, lr=0.05)
FULL = dict(max_blocks=30, train_blocks=9, n_train=None, epochs=15, lr=0.05)


def block_stack(k, lam, zero_branch, seed):
    """k stride-1 BasicBlocks of 16 channels with shortcut scale lam, in float64."""
    tinyres.manual_seed(seed)
    stack = nn.Sequential(*[BasicBlock(16, 16, shortcut_scale=lam) for _ in range(k)])
    init_weights(stack, zero_init_residual=zero_branch)
    return stack.to(dtype=np.float64)


def gradient_ratio(k, lam, zero_branch=True, seed=0):
    """|dL/d input| / |dL/d output| through a stack of k blocks, for L = <w, output> with
    a random weighting w (so dL/d output = w)."""
    stack = block_stack(k, lam, zero_branch, seed)
    rng = np.random.default_rng(seed)
    x = tinyres.tensor(np.abs(rng.standard_normal((8, 16, 8, 8))) + 0.1, requires_grad=True)
    w = rng.standard_normal((8, 16, 8, 8))
    (stack(x) * tinyres.tensor(w)).sum().backward()
    return float(np.linalg.norm(x.grad.numpy()) / np.linalg.norm(w))


def measure_law(max_blocks, seed):
    """One row per (lambda, k): measured ratios with F = 0 and with F on, and lambda^k."""
    rows = []
    for lam in LAMBDAS:
        for k in range(1, max_blocks + 1):
            measured = gradient_ratio(k, lam, True, seed)
            rows.append(dict(lam=lam, k=k, predicted=lam ** k, zero_branch=measured,
                             rel_error=abs(measured / lam ** k - 1),
                             branch_on=gradient_ratio(k, lam, False, seed)))
    return rows


def train_lambdas(s, seed):
    """Train CifarResNet(train_blocks, shortcut_scale=lam) briefly for each lambda."""
    x, y, x_test, y_test = digits(s["n_train"])
    runs = []
    for lam in LAMBDAS:
        tinyres.manual_seed(seed)
        model = CifarResNet(s["train_blocks"], num_classes=10, shortcut_scale=lam)
        curve = fit(model, x, y, s["epochs"], lr=s["lr"], seed=seed)
        runs.append(dict(lam=lam, curve=curve, first_loss=curve[0], last_loss=curve[-1],
                         test_error=evaluate(model, x_test, y_test)[1]))
    return runs


def plot(law, runs, out_dir):
    """Measured ratio vs k against lambda^k (left), training curves per lambda (right)."""
    fig, (ax_law, ax_train) = new_figure(2)
    for lam in LAMBDAS:
        rows = [r for r in law if r["lam"] == lam]
        ks = [r["k"] for r in rows]
        line, = ax_law.plot(ks, [r["zero_branch"] for r in rows], "o", label=f"λ={lam}")
        ax_law.plot(ks, [r["predicted"] for r in rows], "-", color=line.get_color())
        ax_law.plot(ks, [r["branch_on"] for r in rows], "x:", color=line.get_color())
    ax_law.set(xlabel="blocks k", ylabel="|dL/dx_0| / |dL/dx_k|", yscale="log",
               title="o F=0 measured, — λ^k, x branches on")
    ax_law.legend(fontsize=8)
    for r in runs:
        ax_train.plot(range(1, len(r["curve"]) + 1), r["curve"], "o-", label=f"λ={r['lam']}")
    ax_train.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax_train.legend(fontsize=8)
    return save_figure(fig, out_dir, "shortcut_scale")


def run(quick=False, seed=0, out_dir=None):
    """Measure the lambda^k law and the short training runs; print and return both tables
    and the numbers ('law': one dict per (lambda, k); 'training': one per lambda)."""
    s = QUICK if quick else FULL
    law = measure_law(s["max_blocks"], seed)
    law_table = format_table(
        ("lambda", "k", "lambda^k", "measured F=0", "rel err", "measured F on"),
        [(r["lam"], r["k"], r["predicted"], r["zero_branch"], f"{r['rel_error']:.1e}",
          r["branch_on"]) for r in law],
        title="gradient ratio |dL/dx_0| / |dL/dx_k| through k blocks")
    runs = train_lambdas(s, seed)
    train_table = format_table(
        ("lambda", "loss epoch 1", f"loss epoch {s['epochs']}", "test err %"),
        [(r["lam"], r["first_loss"], r["last_loss"], 100 * r["test_error"]) for r in runs],
        title=f"CifarResNet({s['train_blocks']}) on {s['n_train'] or 'all'} training digits, "
              f"{s['epochs']} epochs, seed {seed}")
    table = law_table + "\n\n" + train_table
    print(table)
    return dict(table=table, law=law, training=runs, figure=plot(law, runs, out_dir),
                max_rel_error=max(r["rel_error"] for r in law), settings=s, seed=seed)
