"""Containers: Sequential (a chain of layers) and ModuleList (a list of layers).

Children are registered under their position, '0', '1', ..., so a ResNet stage built as
Sequential(BasicBlock, BasicBlock) gives state_dict keys like 'layer1.0.conv1.weight'.
"""
from collections import OrderedDict

from tinyres.nn.module import Module


def _index(i, length, name):
    """A non-negative position from a possibly negative index, checked to be in range."""
    i = int(i)
    if not -length <= i < length:
        raise IndexError(f"{name}: index {i} is out of range for length {length}")
    return i % length


class Sequential(Module):
    """Call the children in order, each on the previous one's output.

    Sequential(a, b, c) names them '0', '1', '2'; Sequential(OrderedDict(name=module))
    keeps the given names."""

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return list(self._modules.values())[_index(index, len(self), "Sequential")]

    def __setitem__(self, index, module):
        key = list(self._modules)[_index(index, len(self), "Sequential")]
        self.add_module(key, module)

    def append(self, module):
        """Add a module at the end, named by its position; returns self."""
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(Module):
    """A list of modules whose parameters are registered (a plain list's would not be)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return self._modules[str(_index(index, len(self), "ModuleList"))]

    def __setitem__(self, index, module):
        self.add_module(str(_index(index, len(self), "ModuleList")), module)

    def append(self, module):
        """Add a module at the end; returns self."""
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        """Append each module of an iterable; returns self."""
        for module in modules:
            self.append(module)
        return self
