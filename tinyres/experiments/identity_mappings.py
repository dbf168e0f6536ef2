"""Identity Mappings in Deep Residual Networks (He, Zhang, Ren, Sun, ECCV 2016), rerun
small: every shortcut variant of its Table 1 and every block ordering of its Fig. 4, trained
on the same data for the same steps, with the gradient along the direct path measured.

With identity shortcuts and nothing after the addition, x_L = x_l + sum_{i=l}^{L-1} F(x_i),
so

    dL/dx_l = dL/dx_L (1 + d/dx_l sum_i F(x_i))                    (eq. 4-5)

and the "1" reaches block l untouched. A shortcut h(x) = lambda x turns the 1 into the
product prod_i lambda_i (eq. 8): 2^-L for lambda = 0.5; a gate into prod_i (1 - g_i(x)), a
dropout into a product of random masks, a 1x1 convolution into a product of matrices, and a
ReLU after the add into a product of masks.

    from tinyres.experiments import identity_mappings
    print(identity_mappings.run(quick=True)["table"])

Each variant is a CifarVariantResNet(n) (6n+2 layers, the variant on the 3n - 2 blocks that
keep the shape) trained by plain SGD on the 8x8 digits. For each: the training loss of the
last epoch (train mode), the test error (eval mode), and the direct-path factor at the first
block, prod over the shape-keeping blocks of |grad through the shortcut| / |grad at the
block's output|, measured by GradientProbe on one training batch after training (train
mode, so a dropout draws its masks), beside the product the formulas give. The gates start
nearly shut, b_g = -6 (g = 0.0025), one of the paper's initialisations. The paper's
CIFAR-10 figures are printed beside, labelled as the paper's.
"""
import tinyres
import tinyres.nn.functional as F
from tinyres.experiments.common import (digits, evaluate, fit, format_table, new_figure,
                                        save_figure)
from tinyres.models import CifarVariantResNet
from tinyres.probes import GradientProbe, direct_path

# (label, CifarVariantResNet options)
VARIANTS = [
    ("original", dict(shortcut="identity", ordering="original")),
    ("constant 0.5", dict(shortcut="constant_scaling", lam=0.5)),
    ("constant 0.5, F x 0.5", dict(shortcut="constant_scaling", lam=0.5, scale_branch=True)),
    ("exclusive gating", dict(shortcut="exclusive_gating", gate_bias=-6.0)),
    ("shortcut-only gating", dict(shortcut="shortcut_only_gating", gate_bias=-6.0)),
    ("1x1 conv shortcut", dict(shortcut="conv")),
    ("dropout shortcut", dict(shortcut="dropout", p=0.5)),
    ("BN after addition", dict(ordering="bn_after_add")),
    ("ReLU before addition", dict(ordering="relu_before_add")),
    ("ReLU-only pre-act", dict(ordering="relu_only_preact")),
    ("full pre-activation", dict(ordering="full_preact")),
]

# He et al. 2016, CIFAR-10 test error (%), ResNet-110 unless said (their Tables 1 and 2;
# for the gates, the best of the paper's gate-bias settings)
PAPER = {
    "original": "6.61", "constant 0.5": "fails to train",
    "constant 0.5, F x 0.5": "12.35", "exclusive gating": "8.70",
    "shortcut-only gating": "6.91", "1x1 conv shortcut": "12.22",
    "dropout shortcut": "fails to train", "BN after addition": "8.17",
    "ReLU before addition": "7.84", "ReLU-only pre-act": "6.71",
    "full pre-activation": "6.37 (ResNet-164: 5.46, ResNet-1001: 4.62)",
}

QUICK = dict(n=3, n_train=256, batch_size=64, epochs=3, lr=0.05)
FULL = dict(n=9, n_train=None, batch_size=64, epochs=10, lr=0.05)


def build(options, n, seed):
    """The variant's CifarVariantResNet(n), its weights drawn from `seed`."""
    tinyres.manual_seed(seed)
    return CifarVariantResNet(n, **options)


def direct_path_factor(model, x, y):
    """(measured, formula): eq. 8's product of shortcut factors from the last
    shape-keeping block down to the first, on the batch (x, y) in train mode."""
    model.train()
    with GradientProbe(model) as probe:
        F.cross_entropy(model(tinyres.tensor(x)), tinyres.tensor(y)).backward()
    model.zero_grad()
    first = direct_path(probe.records())[0]
    return first["measured"], first["formula"]


def train_variant(label, options, s, data, seed):
    """Train one variant; its numbers."""
    x, y, x_test, y_test = data
    model = build(options, s["n"], seed)
    curve = fit(model, x, y, s["epochs"], batch_size=s["batch_size"], lr=s["lr"], seed=seed)
    tinyres.manual_seed(seed + 1)                 # the dropout masks of the measurement
    measured, formula = direct_path_factor(model, x[:64], y[:64])
    again, _ = direct_path_factor(model, x[:64], y[:64])     # other masks, same batch
    return dict(label=label, options=options, curve=curve, train_loss=curve[-1],
                test_error=evaluate(model, x_test, y_test)[1], path=measured,
                path_formula=formula, path_again=again, paper=PAPER[label])


def plot(runs, out_dir):
    """Training loss per epoch (left), the direct-path factor per variant (right)."""
    fig, (ax_loss, ax_path) = new_figure(2, width=6, height=4)
    for r in runs:
        ax_loss.plot(range(1, len(r["curve"]) + 1), r["curve"], "o-", label=r["label"])
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax_loss.legend(fontsize=7)
    labels = [r["label"] for r in runs]
    ax_path.barh(labels, [r["path"] for r in runs], color="C0", label="measured")
    ax_path.plot([r["path_formula"] for r in runs], labels, "k|", ms=12, label="formula")
    ax_path.set(xscale="log", xlabel="direct-path factor at the first block (eq. 8)")
    ax_path.legend(fontsize=7)
    return save_figure(fig, out_dir, "identity_mappings")


def run(quick=False, seed=0, out_dir=None):
    """Train every variant and measure its direct path; print and return the table
    ('runs': one dict per variant, in the order of VARIANTS)."""
    s = QUICK if quick else FULL
    data = digits(s["n_train"])
    runs = [train_variant(label, options, s, data, seed) for label, options in VARIANTS]
    blocks = 3 * s["n"] - 2
    table = format_table(
        ("variant", "train loss", "test err %", "direct path", "formula",
         "paper: CIFAR-10 err %"),
        [(r["label"], r["train_loss"], 100 * r["test_error"], f"{r['path']:.3g}",
          f"{r['path_formula']:.3g}", r["paper"]) for r in runs],
        title=f"CifarVariantResNet({s['n']}) ({6 * s['n'] + 2} layers) on "
              f"{s['n_train'] or 'all'} training digits, {s['epochs']} epochs, seed {seed}; "
              f"direct path = prod of the {blocks} shape-keeping blocks' shortcut factors "
              f"(0.5^{blocks} = {0.5 ** blocks:.3g}); the last column is the paper's "
              f"(He et al. 2016, ResNet-110 on CIFAR-10), not this run's")
    print(table)
    return dict(table=table, runs=runs, figure=plot(runs, out_dir), settings=s, seed=seed,
                blocks=blocks)
