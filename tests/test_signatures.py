"""Every public callable tinyres shares with PyTorch has PyTorch's signature: the same
parameter names in the same order, the same kinds (positional or keyword-only) and the same
defaults, so that code written for torch calls tinyres the same way.

Compared: tinyres.nn.functional with torch.nn.functional, the constructors of tinyres.nn's
modules, tinyres.optim's optimizers and lr_scheduler's schedulers with torch's, and the
top-level functions of tinyres with torch's. Where torch's own signature is only
(*args, **kwargs) (a dispatch wrapper) there is nothing to compare, but for the max-pooling
functions, whose full signature is their `_with_indices` twin's. The few differences
that are meant are listed in KNOWN with the reason; a difference not listed fails, and so
does a listed one that has gone away (the list must not outlive its reasons).
"""
import inspect

import pytest

import tinyres
import tinyres.nn as tnn
import tinyres.nn.functional as TF
import tinyres.optim as toptim

torch = pytest.importorskip("torch")

KNOWN = {
    "torch.save": "tinyres writes its own zip format: torch's pickle and zip-format options "
                  "(pickle_module, pickle_protocol, ...) have no meaning there",
    "torch.norm": "no out= tensors in tinyres",
    "torch.nn.functional.normalize": "no out= tensors in tinyres",
    "torch.load": "weights_only defaults to True, as torch.load has behaved since 2.6 "
                  "(torch spells that default None and resolves it at call time)",
    "torch.nn.Parameter": "torch's Parameter takes its arguments in __new__; tinyres's "
                          "__init__ takes the same (data, requires_grad)",
}


def parameters(fn):
    """[(name, kind, default)] of fn's signature, or None where there is none to read or it
    is only *args/**kwargs."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = [p for p in sig.parameters.values() if p.name != "self"]
    if all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return None
    return [(p.name, p.kind, p.default) for p in params]


def same_default(a, b):
    if a is inspect.Parameter.empty or b is inspect.Parameter.empty:
        return a is b
    try:
        return type(a) is type(b) and bool(a == b) or repr(a) == repr(b)
    except Exception:
        return repr(a) == repr(b)


def differences(ours, theirs):
    """What differs between two parameter lists, in words (empty: the same)."""
    out = []
    names, torch_names = [n for n, _, _ in ours], [n for n, _, _ in theirs]
    if names != torch_names:
        out.append(f"names {names} != torch's {torch_names}")
    torch_by_name = {n: (k, d) for n, k, d in theirs}
    for name, kind, default in ours:
        if name in torch_by_name:
            t_kind, t_default = torch_by_name[name]
            if kind != t_kind:
                out.append(f"{name}: {kind.description} != torch's {t_kind.description}")
            if not same_default(default, t_default):
                out.append(f"{name}: default {default!r} != torch's {t_default!r}")
    return out


def with_indices(name, fn):
    """torch's max-pooling functions dispatch on return_indices through a (*args, **kwargs)
    wrapper; their whole signature is that of the `_with_indices` function beside them."""
    full = getattr(torch.nn.functional, name + "_with_indices", None)
    return full if parameters(fn) is None and full is not None else fn


def shared_callables():
    """(torch name, tinyres callable, torch callable) of everything both offer."""
    pairs = []
    for name in dir(TF):
        ours, theirs = getattr(TF, name), getattr(torch.nn.functional, name, None)
        if not name.startswith("_") and callable(ours) and callable(theirs) \
                and not inspect.isclass(ours):
            pairs.append((f"torch.nn.functional.{name}", ours, with_indices(name, theirs)))
    for module, torch_module, prefix in ((tnn, torch.nn, "torch.nn"),
                                         (toptim, torch.optim, "torch.optim"),
                                         (toptim.lr_scheduler, torch.optim.lr_scheduler,
                                          "torch.optim.lr_scheduler")):
        for name in dir(module):
            ours, theirs = getattr(module, name), getattr(torch_module, name, None)
            if inspect.isclass(ours) and inspect.isclass(theirs) and not name.startswith("_"):
                pairs.append((f"{prefix}.{name}", ours.__init__, theirs.__init__))
    for name in dir(tinyres):
        ours, theirs = getattr(tinyres, name), getattr(torch, name, None)
        if not name.startswith("_") and callable(ours) and callable(theirs) \
                and not inspect.isclass(ours) and not inspect.ismodule(ours):
            pairs.append((f"torch.{name}", ours, theirs))
    return pairs


def test_there_are_enough_shared_callables_to_mean_something():
    names = {name for name, _, _ in shared_callables()}
    assert len(names) > 200
    assert {"torch.nn.functional.conv2d", "torch.nn.Conv2d", "torch.optim.SGD",
            "torch.optim.lr_scheduler.OneCycleLR", "torch.cat"} <= names


def test_every_shared_callable_has_torchs_signature():
    wrong = {}
    for name, ours, theirs in shared_callables():
        mine, torchs = parameters(ours), parameters(theirs)
        if mine is None or torchs is None:
            continue
        found = differences(mine, torchs)
        if found and name not in KNOWN:
            wrong[name] = found
    assert not wrong, "\n".join(f"{k}: {'; '.join(v)}" for k, v in sorted(wrong.items()))


def test_every_known_difference_is_still_there():
    gone = []
    for name, ours, theirs in shared_callables():
        if name in KNOWN:
            mine, torchs = parameters(ours), parameters(theirs)
            if mine is not None and torchs is not None and not differences(mine, torchs):
                gone.append(name)
    listed = {name for name, _, _ in shared_callables()}
    assert not gone and set(KNOWN) <= listed, (gone, set(KNOWN) - listed)


def test_differences_catch_a_renamed_reordered_or_changed_parameter():
    def torch_like(input, weight, bias=None, *, eps=1e-5):
        pass

    def renamed(x, weight, bias=None, *, eps=1e-5):
        pass

    def reordered(input, bias=None, weight=None, *, eps=1e-5):
        pass

    def keyword_became_positional(input, weight, bias=None, eps=1e-5):
        pass

    def other_default(input, weight, bias=None, *, eps=1e-6):
        pass

    want = parameters(torch_like)
    assert differences(parameters(torch_like), want) == []
    for fn in (renamed, reordered, keyword_became_positional, other_default):
        assert differences(parameters(fn), want), fn.__name__
