"""Solutions to the exercises of notebook 06. Each `# %% exercise N` section replaces the
cell tagged exercise-N; tests/test_notebooks.py runs them through the notebook's checks."""

# %% exercise 1
# with F = 0 only the all-shortcut path is left: 0.8 ** 9
predicted_ratio = 0.8 ** 9            # 0.134

# %% exercise 2
# lam ** 9 = 0.5
lam_half = 0.5 ** (1 / 9)             # 0.926
