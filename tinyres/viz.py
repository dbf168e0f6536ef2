"""Pictures of what the engine does: the autograd graph as Graphviz DOT, and the gradient
flow through residual blocks as a chart.

    import tinyres.viz as viz
    out = block(x)
    dot = viz.to_dot(out, params=dict(block.named_parameters()))
    viz.render(dot, "block.svg")            # SVG if Graphviz's `dot` is installed

    with GradientProbe(model) as probe:
        F.cross_entropy(model(x), y).backward()
    viz.gradient_flow_chart(probe.records(), "flow.png")

The graph has one node per tensor that the backward walk visits (the same tensors, in
the same order, as `tinyres.tensor._topological_order`): an op's output is drawn as the
op (its Function class), a leaf as a box with its shape (and its name, for parameters).
At a ResidualAdd the two incoming edges are told apart: the residual branch F(x), and
the shortcut, drawn bold and red, labelled with its scale lambda: the edge that carries
the "+1" back.
"""
import shutil
import subprocess
from pathlib import Path

from tinyres.functional.residual import ResidualAdd
from tinyres.tensor import _topological_order

SHORTCUT_STYLE = 'color="#d62728", penwidth=2.5, style=bold, fontcolor="#d62728"'
BRANCH_STYLE = 'color="#1f77b4", fontcolor="#1f77b4"'


def _shape(t):
    return "x".join(str(s) for s in t.shape) or "scalar"


def _quote(text):
    # a DOT label keeps "\n" as its line break, so only quotes are escaped
    return '"' + str(text).replace('"', '\\"') + '"'


def graph_nodes(output):
    """The tensors of output's graph, inputs before the ops that use them."""
    return _topological_order(output)


def _node_line(key, t, names):
    """One DOT node statement for tensor t."""
    if t._ctx is None:
        name = names.get(id(t))
        label = f"{name}\\n{_shape(t)}" if name else f"input {_shape(t)}"
        fill = "#e8f4e8" if name else "#f2f2f2"
        return f'  {key} [label={_quote(label)}, shape=box, style=filled, fillcolor="{fill}"];'
    op = t._ctx.function
    if op is ResidualAdd:
        scale = getattr(t._ctx, "scale", None)
        plus = ("F(x) + lambda x" if scale is None else "F(x) + x" if scale == 1.0
                else f"F(x) + {scale:g} x")
        label = f"ResidualAdd\\n{plus}\\n{_shape(t)}"
        return (f'  {key} [label={_quote(label)}, shape=doubleoctagon, style=filled, '
                f'fillcolor="#ffd8a8"];')
    label = f"{op.__name__}\\n{_shape(t)}"
    return f'  {key} [label={_quote(label)}, shape=ellipse];'


def _shortcut_label(ctx):
    # backward frees the context's attributes, so the scale may no longer be known
    scale = getattr(ctx, "scale", None)
    return "shortcut (x lambda)" if scale is None else f"shortcut (x lambda = {scale:g})"


def to_dot(output, params=None, title=None):
    """The autograd graph of `output` as Graphviz DOT text.

    params: optional dict name -> tensor (e.g. dict(model.named_parameters())) to name the
    parameter leaves. Edges run from inputs to the op that used them (the forward
    direction; gradients flow against them). ResidualAdd nodes are highlighted and their
    shortcut edge is drawn bold and labelled "shortcut (x lambda)", the other "branch".
    """
    names = {id(t): name for name, t in (params or {}).items()}
    nodes = graph_nodes(output)
    keys = {id(t): f"n{i}" for i, t in enumerate(nodes)}
    lines = ["digraph autograd {", "  rankdir=TB;",
             '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9];']
    if title:
        lines.append(f"  label={_quote(title)}; labelloc=t;")
    lines += [_node_line(keys[id(t)], t, names) for t in nodes]
    for t in nodes:
        if t._ctx is None:
            continue
        is_residual = t._ctx.function is ResidualAdd
        for position, parent in enumerate(t._ctx.inputs):
            if parent is None or id(parent) not in keys:
                continue
            edge = f"  {keys[id(parent)]} -> {keys[id(t)]}"
            if is_residual and position == 0:
                edge += f' [label="branch", {BRANCH_STYLE}]'
            elif is_residual and position == 1:
                edge += f" [label={_quote(_shortcut_label(t._ctx))}, {SHORTCUT_STYLE}]"
            lines.append(edge + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot, path, fmt=None):
    """Write `dot` as an image through Graphviz's `dot` program (format from the suffix of
    path, SVG by default). Without Graphviz, write the DOT text next to it (path with the
    suffix .dot) and say so. Returns the path written."""
    path = Path(path)
    fmt = fmt or (path.suffix.lstrip(".") or "svg")
    program = shutil.which("dot")
    if program is None:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(dot)
        print(f"render: Graphviz 'dot' not found; wrote the DOT text to {dot_path} "
              f"(render it with: dot -T{fmt} {dot_path} -o {path})")
        return dot_path
    subprocess.run([program, f"-T{fmt}", "-o", str(path)], input=dot.encode(), check=True)
    return path


def _bar_chart(ax, records):
    import numpy as np
    index = np.arange(len(records))
    short = [r["grad_shortcut"] for r in records]
    branch = [r["grad_branch"] for r in records]
    g_in = [r["grad_input"] for r in records]
    width = 0.4
    ax.bar(index - width / 2, short, width, label="|g shortcut|", color="#d62728")
    ax.bar(index + width / 2, branch, width, label="|g branch|", color="#1f77b4")
    ax.plot(index, g_in, "k.-", label="|g in|")
    ax.set_xticks(index)
    ax.set_xticklabels([r["block"] for r in records], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("gradient norm")
    if all(v > 0 for v in g_in + branch):
        ax.set_yscale("log")
    ax.legend(fontsize=8)


def gradient_flow_chart(records, path=None, title=None, ax=None):
    """Per-block gradient flow from GradientProbe.records(): bars of |g shortcut| and
    |g branch| for each block, a line of |g in| (their vector sum). Saves to `path`
    when given; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt
    if not records:
        raise ValueError("gradient_flow_chart: no records (did a backward pass run "
                         "while the probe was attached?)")
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(records) + 2), 3.6))
    else:
        fig = ax.figure
    _bar_chart(ax, records)
    ax.set_title(title or "gradient flow per block (input side on the left)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig


def compare_gradient_flow(runs, path=None, title=None):
    """|g in| per block for several models, one line each: `runs` maps a label to its
    GradientProbe.records(). Saves to `path` when given; returns the Figure."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for label, records in runs.items():
        ax.plot([r["index"] for r in records], [r["grad_input"] for r in records], "o-",
                markersize=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("block (0 = nearest the input)")
    ax.set_ylabel("|gradient at block input|")
    ax.set_title(title or "gradient reaching each block", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig


__all__ = ["compare_gradient_flow", "gradient_flow_chart", "graph_nodes", "render", "to_dot"]
