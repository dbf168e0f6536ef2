"""Solutions to the exercises of notebook 05. Each `# %% exercise N` section replaces the
cell tagged exercise-N; tests/test_notebooks.py runs them through the notebook's checks."""

# %% exercise 1
# with running averages that match the final weights, eval mode reads about what train
# mode did in the last epoch (printed above), a little below it: that figure was taken while
# the weights were still improving. Well below the stale running averages' figure
predicted_error_after = 100 * plain32["errors"][-1] - 5


def recalibrate(model, images):
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in norms:
        bn.momentum = 1.0
    model.train()
    with tinyres.no_grad():
        model(tinyres.tensor(images))
    for bn in norms:
        bn.momentum = 0.1

# %% exercise 2
# equal logits give every class probability 1/10: the loss is -ln(1/10) = ln 10
predicted_chance_loss = math.log(10)


def know_nothing(model):
    tinyres.nn.init.zeros_(model.fc.weight)
    tinyres.nn.init.zeros_(model.fc.bias)
    return model
