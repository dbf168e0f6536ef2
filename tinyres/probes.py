"""Probes: what flows back through each residual block's shortcut and its branch.

    with GradientProbe(model) as probe:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    print(probe.summary())          # one row per block
    rows = probe.records()          # list of dicts, ready for a DataFrame or a plot

A block's input x feeds two paths, the residual branch F and the shortcut. While a probe
is attached, each block hands its two paths their own identity "tap" of x, so the
gradient coming back along each path can be seen before the two add up in x's gradient:

    grad_x = grad_through_branch + grad_through_shortcut      (checked for every block)

For an identity shortcut the second term is lambda * (the gradient after the residual
add): the "+1" of y = F(x) + x, measured.

Each row also holds the block's shortcut factor, |grad through the shortcut| / |grad at
the output|, measured, beside what the block's formula says the shortcut path carries
(`block.shortcut_formula`: 1 for a pre-activation identity, lambda for a scaled shortcut,
the ReLU's mask after an add, 1 - g(x) for a gate, W^T for a 1x1 convolution, the mask of
a dropout) and the relative difference between the two gradients. `direct_path(rows)`
multiplies the factors along the blocks that keep the shape: the paper's eq. 8,

    dL/dx_l = dL/dx_L (prod_{i=l}^{L-1} h_i'  +  terms through the branches).

With `cut_branches=True` the branches are cut from the graph (each branch reads a detached
copy of the block's input), so the gradient reaching a block's input is the direct-path
term alone.
"""
import numpy as np

from tinyres.autograd import Function


class Tap(Function):
    """The identity, as its own node, so a hook on its output sees one path's gradient."""

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, grad_out):
        # d x/dx = 1
        return grad_out


def _norm(a):
    return 0.0 if a is None else float(np.sqrt((np.asarray(a, dtype=np.float64) ** 2).sum()))


def _cosine(a, b):
    if a is None or b is None:
        return float("nan")
    na, nb = _norm(a), _norm(b)
    if na == 0.0 or nb == 0.0:
        return float("nan")
    return float((np.asarray(a, np.float64) * np.asarray(b, np.float64)).sum() / (na * nb))


class GradientProbe:
    """Attach to a model (context manager); records one row per residual block for the
    latest backward pass. `rtol` bounds the check that the two paths sum to the input
    gradient."""

    def __init__(self, model, rtol=1e-4, cut_branches=False):
        from tinyres.models.resnet import ResidualBlock
        self.blocks = [(name, m) for name, m in model.named_modules()
                       if isinstance(m, ResidualBlock)]
        if not self.blocks:
            raise ValueError("GradientProbe: the model has no residual blocks to watch")
        self.names = {id(m): name for name, m in self.blocks}
        self.rtol = rtol
        self.cut_branches = cut_branches
        self._grads = {}

    def __enter__(self):
        for _, block in self.blocks:
            block.probe = self
        return self

    def __exit__(self, *exc):
        for _, block in self.blocks:
            block.probe = None
        return False

    # ----- called by the blocks during forward --------------------------------------
    def tap(self, block, x):
        """Two taps of x, one per path, each reporting the gradient that comes back."""
        if not x.requires_grad:
            return x, x
        name = self.names[id(block)]
        grads = self._grads[name] = {}
        x_branch, x_shortcut = Tap.apply(x), Tap.apply(x)
        if self.cut_branches:
            x_branch = x.detach()
        else:
            x_branch.register_hook(lambda g: self._store(grads, "branch", g))
        x_shortcut.register_hook(lambda g: self._store(grads, "shortcut", g))
        x.register_hook(lambda g: self._store(grads, "input", g))
        return x_branch, x_shortcut

    def watch_output(self, block, out):
        if out.requires_grad and self.names[id(block)] in self._grads:
            grads = self._grads[self.names[id(block)]]
            grads["output_value"] = out.numpy().copy()
            out.register_hook(lambda g: self._store(grads, "output", g))

    @staticmethod
    def _store(grads, key, g):
        grads[key] = g.numpy().copy()

    # ----- results ------------------------------------------------------------------
    def records(self):
        """One dict per block: gradient norms at its output, through the shortcut and
        the branch, their cosine, at its input, and the check that the paths add up."""
        rows = []
        for index, (name, block) in enumerate(self.blocks):
            g = self._grads.get(name, {})
            if "input" not in g:
                continue
            branch, shortcut, total = g.get("branch"), g.get("shortcut"), g["input"]
            parts = sum(p for p in (branch, shortcut) if p is not None)
            error = _norm(parts - total) / max(_norm(total), 1e-30)
            if error > self.rtol:
                raise RuntimeError(f"GradientProbe: in block {name} the branch and shortcut "
                                   f"gradients do not add up to the input gradient "
                                   f"(relative error {error:.2e})")
            rows.append({
                "block": name, "index": index, "residual": block.residual,
                "shortcut_scale": block.shortcut_scale,
                "grad_output": _norm(g.get("output")), "grad_shortcut": _norm(shortcut),
                "grad_branch": _norm(branch), "cosine": _cosine(shortcut, branch),
                "grad_input": _norm(total), "sum_error": error,
                "keeps_shape": block.downsample is None,
                **shortcut_factors(block, g),
            })
        return rows

    def summary(self):
        """The records as a printable table."""
        header = (f"{'block':<18}{'|g out|':>11}{'|g short|':>11}{'|g branch|':>11}"
                  f"{'cos':>7}{'|g in|':>11}{'in/out':>8}")
        lines = [header, "-" * len(header)]
        for r in self.records():
            ratio = r["grad_input"] / r["grad_output"] if r["grad_output"] else float("nan")
            lines.append(f"{r['block']:<18}{r['grad_output']:>11.3e}{r['grad_shortcut']:>11.3e}"
                         f"{r['grad_branch']:>11.3e}{r['cosine']:>7.2f}{r['grad_input']:>11.3e}"
                         f"{ratio:>8.3f}")
        return "\n".join(lines)


def shortcut_factors(block, g):
    """The block's shortcut factor measured (|g short| / |g out|), the formula's
    (|formula(g out)| / |g out|, nan where the block states none), and the relative
    difference between the measured shortcut gradient and the formula's."""
    out_grad, shortcut = g.get("output"), g.get("shortcut")
    if out_grad is None:
        return {"factor": float("nan"), "formula_factor": float("nan"),
                "formula_error": float("nan")}
    g_out = np.asarray(out_grad, np.float64)
    measured = np.zeros_like(g_out) if shortcut is None else np.asarray(shortcut, np.float64)
    predicted = block.shortcut_formula(g_out, g["output_value"])
    norm_out = max(_norm(g_out), 1e-30)
    if predicted is None:
        return {"factor": _norm(measured) / norm_out, "formula_factor": float("nan"),
                "formula_error": float("nan")}
    predicted = np.asarray(predicted, np.float64)
    return {"factor": _norm(measured) / norm_out, "formula_factor": _norm(predicted) / norm_out,
            "formula_error": _norm(measured - predicted) / max(_norm(predicted), 1e-30)}


def direct_path(rows):
    """The paper's eq. 8 along the blocks that keep the shape: for each such block l, the
    product of the shortcut factors from l to the last of them, measured and by the
    formula. A list of dicts (block, measured, formula), first block first."""
    kept = [r for r in rows if r["keeps_shape"]]
    products, measured, formula = [], 1.0, 1.0
    for r in reversed(kept):
        measured *= r["factor"]
        formula *= r["formula_factor"]
        products.append({"block": r["block"], "measured": measured, "formula": formula})
    return products[::-1]


__all__ = ["GradientProbe", "Tap", "direct_path", "shortcut_factors"]
