"""tinyres.vision.models: torchvision's ResNet constructors and signature, building models
with torchvision's parameter counts and state_dict keys, equal in float64 to the
torchvision-layout PyTorch ResNet of tests/torch_resnets.py; weights= is refused."""
import inspect

import numpy as np
import pytest

import tinyres
from tinyres.models import ResNet
from tinyres.vision import models

# torchvision.models' figures for 1000 classes.
PARAMETERS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_counts_are_torchvisions(name):
    model = getattr(models, name)()
    assert isinstance(model, ResNet)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]


def test_the_signature_is_torchvisions():
    for name in models.__all__:
        params = inspect.signature(getattr(models, name)).parameters
        assert params["weights"].kind is inspect.Parameter.KEYWORD_ONLY
        assert params["weights"].default is None and params["progress"].default is True
    assert models.resnet18(num_classes=10).fc.weight.shape == (10, 512)


def test_weights_are_refused_with_the_way_to_bring_them():
    with pytest.raises(ValueError, match="resnet18.*downloads no weights.*load_file"):
        models.resnet18(weights="IMAGENET1K_V1")


def test_resnet18_equals_the_torchvision_layout_in_float64():
    torch = pytest.importorskip("torch")
    torch_resnets = pytest.importorskip("torch_resnets")
    torch.manual_seed(0)
    theirs = torch_resnets.resnet18().double().eval()
    ours = models.resnet18().double().eval()
    state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    assert list(ours.state_dict()) == list(state)
    ours.load_state_dict({k: tinyres.tensor(v) for k, v in state.items()})
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32))
    with torch.no_grad():
        expected = theirs(torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours(tinyres.tensor(x)).numpy(), expected, rtol=1e-10,
                               atol=1e-12)
