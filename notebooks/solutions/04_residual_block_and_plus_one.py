"""Solutions to the exercises of notebook 04. Each `# %% exercise N` section replaces the
cell tagged exercise-N; tests/test_notebooks.py runs them through the notebook's checks."""

# %% exercise 1
def basic_block_forward(block, x):
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    identity = x if block.downsample is None else block.downsample(x)
    return block.relu(F.residual_add(out, identity))

# %% exercise 2
# (1 + 0.1)(1 - 0.2)(1 + 0.3): all 8 paths contribute; the all-shortcut one is the 1
predicted_residual = 1.1 * 0.8 * 1.3          # 1.144
predicted_plain = 0.1 * -0.2 * 0.3            # -0.006, the one all-branch path
