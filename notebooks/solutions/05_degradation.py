"""Solutions to the exercises of notebook 05. Each `# %% exercise N` section replaces the
cell tagged exercise-N; tests/test_notebooks.py runs them through the notebook's checks."""

# %% exercise 1
# with momentum 1.0 the running averages become the statistics of that one batch of all the
# training images, the very statistics train mode normalises that batch with: eval mode then
# computes what train mode does (but for the unbiased variance's n/(n - 1), with n in the
# thousands), so the two classify every digit alike
predicted_gap = 0


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
