"""Make the figures the README shows, into docs/figures/ (small PNGs):

    python notebooks/make_figures.py

- probe_resnet20_vs_plain.png: the gradient reaching each block's input, resnet20 against
  its plain twin and resnet56 against its plain twin (one batch, at initialization);
- gradient_flow_resnet20.png: resnet20's per-block split into shortcut and branch;
- lambda_k.png: the gradient ratio through k zero-initialised blocks with shortcut scale
  lambda, measured with GradientProbe, against lambda^k.
"""
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib.pyplot as plt  # noqa: E402

import tinyres  # noqa: E402
import tinyres.nn.functional as F  # noqa: E402
from tinyres import models, viz  # noqa: E402
from tinyres.probes import GradientProbe  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "figures"
DPI = 80


def probe_records(model, seed=0, batch=16, size=16):
    """GradientProbe records for one cross-entropy backward on a random batch."""
    tinyres.manual_seed(seed)
    x = tinyres.randn(batch, 3, size, size)
    y = tinyres.tensor(np.arange(batch) % 10)
    with GradientProbe(model) as probe:
        F.cross_entropy(model(x), y).backward()
    return probe.records()


def built(constructor, **kwargs):
    tinyres.manual_seed(0)
    return constructor(**kwargs)


def probe_figure():
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, (name, ctor) in zip(axes, [("resnet20", models.resnet20),
                                       ("resnet56", models.resnet56)]):
        for label, kwargs in [(name, {}), ("plain twin", {"shortcut": None})]:
            rows = probe_records(built(ctor, **kwargs))
            ax.plot([r["index"] for r in rows], [r["grad_input"] for r in rows], "o-",
                    markersize=3, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("block (0 = nearest the input)")
        ax.set_ylabel("|gradient at block input|")
        ax.set_title(f"{name} vs its plain twin, at initialization", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "probe_resnet20_vs_plain.png", dpi=DPI)
    plt.close(fig)


def flow_figure():
    fig = viz.gradient_flow_chart(probe_records(built(models.resnet20)),
                                  title="resnet20: gradient through shortcut and branch")
    fig.savefig(OUT / "gradient_flow_resnet20.png", dpi=DPI)
    plt.close(fig)


def lambda_figure(lambdas=(0.5, 0.8, 1.0, 1.2, 1.5), blocks=9):
    """|g at the input of block 0| / |g at the output of block k-1| through k zero-init
    stride-1 blocks (resnet56's first stage), against lambda^k."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ks = np.arange(1, blocks + 1)
    for lam in lambdas:
        rows = {r["block"]: r for r in probe_records(
            built(models.resnet56, zero_init_residual=True, shortcut_scale=lam), batch=8)}
        g_out = rows[f"layer1.{blocks - 1}"]["grad_output"]
        ratio = [rows[f"layer1.{blocks - k}"]["grad_input"] / g_out for k in ks]
        line, = ax.plot(ks, ratio, "o", markersize=4, label=f"lambda = {lam:g}")
        ax.plot(ks, float(lam) ** ks, "-", color=line.get_color(), lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("k (blocks the gradient crosses)")
    ax.set_ylabel("gradient ratio")
    ax.set_title("shortcut scale lambda: dots measured, lines lambda^k", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "lambda_k.png", dpi=DPI)
    plt.close(fig)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    probe_figure()
    flow_figure()
    lambda_figure()
    for path in sorted(OUT.glob("*.png")):
        print(f"{path.relative_to(OUT.parent.parent)}  {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
