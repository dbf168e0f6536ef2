"""tinyres.viz: the autograd graph as DOT text, and the per-block gradient-flow chart."""
import re

import numpy as np
import pytest

import tinyres
import tinyres.nn.functional as F
from tinyres import models, viz
from tinyres.probes import GradientProbe

NODE = re.compile(r"^\s*n\d+ \[", re.MULTILINE)
EDGE = re.compile(r"^\s*n\d+ -> n\d+", re.MULTILINE)
SHORTCUT_EDGE = re.compile(r"^\s*n\d+ -> n\d+ \[label=\"shortcut \(x lambda[^\"]*\"[^\]]*"
                           r"penwidth", re.MULTILINE)


def block_output(scale=1.0):
    tinyres.manual_seed(0)
    block = models.BasicBlock(4, 4, shortcut_scale=scale)
    x = tinyres.randn(2, 4, 6, 6, requires_grad=True)
    return block, x, block(x)


def test_block_graph_has_one_residual_add_with_a_marked_shortcut_from_the_input():
    block, x, out = block_output()
    dot = viz.to_dot(out, params=dict(block.named_parameters()))
    nodes = viz.graph_nodes(out)
    assert len(NODE.findall(dot)) == len(nodes)
    assert dot.count("ResidualAdd") == 1
    (shortcut,) = SHORTCUT_EDGE.findall(dot)
    input_key = f"n{[id(t) for t in nodes].index(id(x))}"
    assert shortcut.split("->")[0].strip() == input_key     # the shortcut starts at x
    assert len(re.findall(r'label="branch"', dot)) == 1
    assert "conv1.weight" in dot and "bn2.bias" in dot


def test_every_op_input_is_an_edge():
    _, _, out = block_output()
    nodes = viz.graph_nodes(out)
    expected = sum(1 for t in nodes if t._ctx is not None
                   for p in t._ctx.inputs if p is not None and p.requires_grad)
    assert len(EDGE.findall(viz.to_dot(out))) == expected


def test_shortcut_label_carries_the_scale():
    _, _, out = block_output(scale=0.5)
    dot = viz.to_dot(out)
    assert "shortcut (x lambda = 0.5)" in dot and "F(x) + 0.5 x" in dot


def test_small_net_graph_marks_every_residual_add():
    tinyres.manual_seed(0)
    model = models.resnet20()
    out = model(tinyres.randn(2, 3, 8, 8)).sum()
    dot = viz.to_dot(out, params=dict(model.named_parameters()))
    assert len(NODE.findall(dot)) == len(viz.graph_nodes(out))
    assert dot.count("shape=doubleoctagon") == 9      # 3 stages x 3 blocks
    assert len(SHORTCUT_EDGE.findall(dot)) == 9
    assert "layer3.2.conv2.weight" in dot


def test_plain_twin_graph_has_no_residual_add():
    tinyres.manual_seed(0)
    model = models.resnet20(shortcut=None)
    dot = viz.to_dot(model(tinyres.randn(2, 3, 8, 8)).sum())
    assert "ResidualAdd" not in dot and not SHORTCUT_EDGE.findall(dot)


def test_render_writes_svg_or_falls_back_to_dot(tmp_path, capsys):
    _, _, out = block_output()
    dot = viz.to_dot(out)
    written = viz.render(dot, tmp_path / "block.svg")
    assert written.exists()
    if written.suffix == ".dot":
        assert written.read_text() == dot
        assert "not found" in capsys.readouterr().out
    else:
        assert written.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_gradient_flow_chart_is_written(tmp_path):
    tinyres.manual_seed(0)
    model = models.resnet20()
    x, y = tinyres.randn(4, 3, 8, 8), tinyres.tensor(np.array([0, 1, 2, 3]))
    with GradientProbe(model) as probe:
        F.cross_entropy(model(x), y).backward()
    path = tmp_path / "flow.png"
    fig = viz.gradient_flow_chart(probe.records(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * 9           # a shortcut bar and a branch bar per block
    assert np.allclose(ax.lines[0].get_ydata(), [r["grad_input"] for r in probe.records()])
    compare = tmp_path / "compare.png"
    viz.compare_gradient_flow({"resnet20": probe.records()}, compare)
    assert compare.stat().st_size > 0


def test_gradient_flow_chart_refuses_empty_records(tmp_path):
    with pytest.raises(ValueError, match="no records"):
        viz.gradient_flow_chart([], tmp_path / "x.png")
