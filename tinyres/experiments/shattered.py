"""Shattered gradients (Balduzzi et al. 2017, "The Shattered Gradients Problem"): feed a
scalar x through a deep ReLU network and look at dy/dx as a function of x. In a shallow
net it is smooth (neighbouring inputs get similar gradients: brown noise); in a deep
plain net it decorrelates into white noise, so a gradient step carries no information
about the neighbourhood; in a resnet it stays correlated, and more so with the residual
branches scaled down.

    from tinyres.experiments import shattered
    print(shattered.run(quick=True)["table"])

Setup: 256 points evenly spaced in [-2, 2]; fully connected layers of width 200 with He
initialisation (N(0, 2/fan_in)) and biases N(0, bias_std^2) (zero biases would make the
net positively homogeneous, so dy/dx would take only two values); batch normalisation
over the 256 inputs whose mean and variance are computed from the batch and then held
fixed as constants while differentiating, so dy/dx at each point depends on that point
alone and one backward pass of sum(y) gives all 256 derivatives. The lag-1
autocorrelation of dy/dx along x summarises each net: near 1 for smooth, near 0 for
white noise.
"""
import numpy as np

import tinyres
import tinyres.nn.functional as F
from tinyres import nn
from tinyres.experiments.common import format_table, new_figure, save_figure

WIDTH, POINTS, BIAS_STD = 200, 256, 0.1
MAX_LAG = 50


# ----- the networks ------------------------------------------------------------------------
def he_linear(n_in, n_out, bias_std):
    """A float64 Linear layer: weights N(0, 2/n_in), biases N(0, bias_std^2)."""
    layer = nn.Linear(n_in, n_out, dtype=np.float64)
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    nn.init.normal_(layer.bias, 0.0, bias_std)
    return layer


def fixed_batch_norm(h):
    """Normalise each unit over the batch with statistics computed from h's values but
    outside the graph, so autograd treats them as constants."""
    values = h.numpy()
    return F.batch_norm(h, values.mean(axis=0), values.var(axis=0), training=False)


class FCNet(nn.Module):
    """x (N, 1) -> ReLU(Linear(1, width)) -> body -> Linear(ReLU(BN(h))) to 1 output.
    The body is `depth - 1` plain layers h <- Linear(ReLU(BN(h))), or, if residual,
    blocks h <- h + scale * F(h) with F = (BN-ReLU-Linear) x layers_per_block, `depth - 1`
    Linear layers in all. The first layer has no BN: the BN of an affine function of a
    scalar x is +-(x - mean x) / std x, which would put every unit's kink at the same x."""

    def __init__(self, depth, residual=False, scale=1.0, batch_norm=True, bias_std=BIAS_STD,
                 layers_per_block=1):
        super().__init__()
        self.residual, self.scale, self.use_bn = residual, scale, batch_norm
        self.per_block = layers_per_block if residual else 1
        self.inp = he_linear(1, WIDTH, bias_std)
        self.hidden = nn.Sequential(*[he_linear(WIDTH, WIDTH, bias_std)
                                      for _ in range(depth - 1)])
        self.out = he_linear(WIDTH, 1, bias_std)

    def unit(self, h, layer):
        """Linear(ReLU(BN(h))): one layer."""
        return layer(F.relu(fixed_batch_norm(h) if self.use_bn else h))

    def forward(self, x):
        h = F.relu(self.inp(x))
        layers = list(self.hidden)
        for start in range(0, len(layers), self.per_block):
            branch = h
            for layer in layers[start:start + self.per_block]:
                branch = self.unit(branch, layer)
            h = h + self.scale * branch if self.residual else branch
        return self.unit(h, self.out)


# ----- measurement ---------------------------------------------------------------------------
def input_gradient(net, x):
    """dy/dx at every point of x (a 1-D array): one backward pass of sum(y)."""
    xt = tinyres.tensor(x[:, None], dtype=np.float64, requires_grad=True)
    net(xt).sum().backward()
    return xt.grad.numpy()[:, 0].copy()


def autocorrelation(g, max_lag=MAX_LAG):
    """Normalised autocorrelation of the sequence g at lags 0..max_lag."""
    d = g - g.mean()
    energy = (d * d).sum()
    if energy == 0.0:
        return np.ones(max_lag + 1)
    return np.array([(d[:len(d) - k] * d[k:]).sum() / energy for k in range(max_lag + 1)])


NETS = {   # name: FCNet options; the first three are the figure's
    "1-layer plain, BN": dict(depth=1),
    "24-layer plain, BN": dict(depth=24),
    "50-layer resnet, BN": dict(depth=51, residual=True),
    "50-layer resnet, BN, branches x0.1": dict(depth=51, residual=True, scale=0.1),
    "24-layer plain, no BN": dict(depth=24, batch_norm=False),
    "24-layer plain, no BN, zero biases": dict(depth=24, batch_norm=False, bias_std=0.0),
}
QUICK_NETS = ("1-layer plain, BN", "24-layer plain, BN", "50-layer resnet, BN",
              "50-layer resnet, BN, branches x0.1")


def measure(name, seed, x):
    """Build net `name` from `seed`; its gradient, autocorrelation and summary numbers."""
    tinyres.manual_seed(seed)
    g = input_gradient(FCNet(**NETS[name]), x)
    acf = autocorrelation(g)
    return dict(net=name, grad=g, acf=acf, lag1=float(acf[1]),
                distinct=int(len(np.unique(np.round(g / (np.abs(g).max() + 1e-300), 9)))))


def plot(results, x, out_dir):
    """dy/dx against x for the first three nets, and every net's autocorrelation."""
    shown = results[:3]
    fig, axes = new_figure(len(shown) + 1, width=3.6)
    for ax, r in zip(axes, shown):
        ax.plot(x, r["grad"], lw=0.8)
        ax.set(title=r["net"], xlabel="x", ylabel="dy/dx")
    for r in results:
        axes[-1].plot(r["acf"], label=r["net"])
    axes[-1].set(title="autocorrelation of dy/dx", xlabel="lag", ylim=(-0.3, 1.05))
    axes[-1].legend(fontsize=6)
    return save_figure(fig, out_dir, "shattered_gradients")


def run(quick=False, seed=0, out_dir=None, num_seeds=None):
    """Measure each net (quick: the four BN nets) from seeds seed, seed+1, ... (quick 3,
    full 10): print and return the table of lag-1 autocorrelations (mean, min, max over
    seeds), 'lag1' (net -> mean), 'results' (the first seed's dicts, with 'grad' and 'acf')
    and the figure (first seed)."""
    x = np.linspace(-2.0, 2.0, POINTS)
    names = QUICK_NETS if quick else tuple(NETS)
    seeds = range(seed, seed + (num_seeds or (3 if quick else 10)))
    per_seed = [[measure(name, s, x) for name in names] for s in seeds]
    rows, lag1 = [], {}
    for i, name in enumerate(names):
        values = np.array([results[i]["lag1"] for results in per_seed])
        lag1[name] = float(values.mean())
        rows.append((name, lag1[name], float(values.min()), float(values.max()),
                     per_seed[0][i]["distinct"]))
    table = format_table(
        ("net", "lag-1 mean", "min", "max", f"distinct dy/dx (seed {seed})"), rows,
        title=f"shattered gradients: dy/dx on {POINTS} points in [-2, 2], width {WIDTH}, "
              f"bias std {BIAS_STD}, seeds {seeds.start}..{seeds.stop - 1}")
    print(table)
    return dict(table=table, lag1=lag1, results=per_seed[0],
                figure=plot(per_seed[0], x, out_dir), seed=seed)
