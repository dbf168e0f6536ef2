"""Solutions to the exercises of notebook 08. Each `# %% exercise N` section replaces the
cell tagged exercise-N; tests/test_notebooks.py runs them through the notebook's checks."""

# %% exercise 1
from math import comb

# binomial(54, 1/2): mean 27, standard deviation sqrt(54)/2 = 3.67, so 19..35 is about
# +-2.2 standard deviations: about 97-98% of the paths
predicted_fraction_19_to_35 = sum(comb(54, j) for j in range(19, 36)) / 2**54


def path_counts(k):
    return [comb(k, j) for j in range(k + 1)]

# %% exercise 2
# each lesion removes its own half of the paths and the rest still carry the signal, so the
# costs add up, about: the base error plus the two single deletions' costs. Far below any
# single lesion of the plain twin
predicted_error_both = 100 * (base["residual"] + cost["residual"]["layer2.2"]
                              + cost["residual"]["layer3.2"])


def delete_two(model, a, b):
    blocks = {name: (stage, i) for name, stage, i in deletable(model)}
    saved = {}
    for name in (a, b):
        stage, i = blocks[name]
        saved[name], stage[i] = stage[i], nn.Identity()
    error = evaluate(model, x_test, y_test)[1]
    for name in (a, b):
        stage, i = blocks[name]
        stage[i] = saved[name]
    return error
