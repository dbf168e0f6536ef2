"""What the experiments share: a small image set, a plain SGD loop, evaluation, a text
table and a saved figure.

The loop here is deliberately smaller than tinyres.train.Trainer: no augmentation, no
schedule, no checkpoints; each experiment trains several twins on the same arrays with
the same budget, so that the only difference between two runs is the architecture.
Like the Trainer, it reads nothing from the device while an epoch runs: the summed loss
and the correct predictions accumulate where the model runs (tinyres.train.RunningTotals)
and are read once per epoch (once per evaluation).
"""
import os

import numpy as np

import tinyres
import tinyres.nn.functional as F
from tinyres import data
from tinyres.optim import SGD
from tinyres.train import RunningTotals

DEFAULT_OUT = os.path.join("runs", "experiments")


# ----- data ------------------------------------------------------------------------------
def digits(n_train=None, upsample=1):
    """The 8x8 digits as 3-channel images, split 80/20 (always the same split), normalised
    by the training set's channel statistics: (x_train, y_train, x_test, y_test)."""
    images, labels = data.load_digits()
    images = data.upsample(data.to_rgb(images), upsample)
    train_idx, test_idx = data.split_indices(len(images), test_fraction=0.2, seed=0)
    if n_train is not None:
        train_idx = train_idx[:n_train]
    x_train, x_test = images[train_idx], images[test_idx]
    mean, std = data.channel_stats(x_train)
    shape = (1, -1, 1, 1)
    mean, std = np.reshape(mean, shape), np.reshape(std, shape)
    return ((x_train - mean) / std).astype(np.float32), labels[train_idx], \
        ((x_test - mean) / std).astype(np.float32), labels[test_idx]


# ----- training ----------------------------------------------------------------------------
def fit(model, x, y, epochs, batch_size=64, lr=0.05, momentum=0.9, weight_decay=0.0,
        seed=0, errors=None):
    """Minibatch SGD on the arrays (x, y) for `epochs` passes, shuffled by `seed`.
    Returns the mean training loss of each epoch (as seen during the pass, in train mode:
    batch norm uses each batch's own statistics); a loss that is not finite stops the run
    early and is recorded as nan. If `errors` is a list, the error rate of each epoch,
    seen the same way, is appended to it."""
    optimizer = SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        model.train()
        order, totals = rng.permutation(len(x)), RunningTotals()
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            logits, labels = model(tinyres.tensor(x[idx])), tinyres.tensor(y[idx])
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            totals.add(loss, logits, labels)
        total, correct = totals.read()
        losses.append(total / len(x))
        if errors is not None:
            errors.append((len(x) - correct) / len(x))
        if not np.isfinite(losses[-1]):
            losses[-1] = float("nan")
            break
    return losses


def evaluate(model, x, y, batch_size=256):
    """(mean cross-entropy, error rate) of `model` in eval mode on (x, y)."""
    model.eval()
    totals = RunningTotals()
    with tinyres.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(tinyres.tensor(x[start:start + batch_size]))
            labels = tinyres.tensor(y[start:start + batch_size])
            totals.add(F.cross_entropy(logits, labels), logits, labels)
    total, correct = totals.read()
    return total / len(x), (len(x) - correct) / len(x)


# ----- reporting ---------------------------------------------------------------------------
def format_table(headers, rows, title=None):
    """Rows of values as aligned text; floats with 4 significant digits."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [title] if title else []
    lines.append("  ".join(str(h).rjust(w) for h, w in zip(headers, widths)))
    lines.append("-" * len(lines[-1]))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def new_figure(ncols, width=4.5, height=3.5):
    """A matplotlib Figure (no pyplot, so no global backend state) and its axes."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * ncols, height))
    axes = fig.subplots(1, ncols)
    return fig, np.atleast_1d(axes)


def save_figure(fig, out_dir, name):
    """Write `fig` as out_dir/name.png (out_dir defaults to runs/experiments); its path."""
    out_dir = out_dir or DEFAULT_OUT
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
