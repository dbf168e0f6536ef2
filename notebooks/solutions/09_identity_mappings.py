"""Solutions to the exercises of notebook 09. Each `# %% exercise N` section replaces the
cell tagged exercise-N; tests/test_notebooks.py runs them through the notebook's checks."""

# %% exercise 1
# with the branches cut only the direct path is left: (1 - g) per block, ten blocks
predicted_ratio = 0.8 ** 10            # 0.107

# %% exercise 2
def preact_block_forward(block, x):
    out = block.conv1(block.relu(block.bn1(x)))
    out = block.conv2(block.relu(block.bn2(out)))
    return F.residual_add(out, x)          # x + F(x), nothing after
