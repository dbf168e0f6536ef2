"""Generator: a random-number generator object, as torch.Generator, for shuffling and splits.

    g = tinyres.Generator().manual_seed(0)
    loader = DataLoader(ds, shuffle=True, generator=g)

Random draws that take no generator come from NumPy's global generator, which
tinyres.manual_seed seeds. A Generator holds a numpy.random.Generator (PCG64) of its own,
so the same seed gives the same draws run after run; they are not torch's numbers (torch's
Mersenne-Twister stream is not reproduced here).
"""
import secrets

import numpy as np

DEFAULT_SEED = 67280421310721      # torch.Generator().initial_seed()


class Generator:
    """A seeded random-number generator. `manual_seed` returns the generator itself, so
    `Generator().manual_seed(0)` works as in torch."""

    def __init__(self, device="cpu"):
        self.device = device
        self.manual_seed(DEFAULT_SEED)

    def manual_seed(self, seed):
        """Restart the stream from `seed` (an int; negative ones wrap as in torch)."""
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise TypeError(f"manual_seed expected an int, got {type(seed).__name__}")
        self._seed = int(seed) % 2 ** 64
        self.rng = np.random.default_rng(self._seed)
        return self

    def initial_seed(self):
        """The seed the stream last restarted from."""
        return self._seed

    def seed(self):
        """Restart from a fresh non-deterministic seed, and return it."""
        seed = secrets.randbits(63)
        self.manual_seed(seed)
        return seed

    def get_state(self):
        """The generator's state, a dict (torch returns a uint8 tensor instead)."""
        return dict(self.rng.bit_generator.state)

    def set_state(self, state):
        """Restore a state from get_state()."""
        self.rng.bit_generator.state = state
        return self

    def __repr__(self):
        return f"Generator(device={self.device!r}, initial_seed={self._seed})"


def permutation(n, generator=None):
    """A random permutation of range(n) (int64) from `generator` or the global stream."""
    if generator is None:
        return np.random.permutation(n).astype(np.int64)
    return generator.rng.permutation(n).astype(np.int64)


def randint(low, high, size, generator=None):
    """Integers uniform in [low, high) from `generator` or the global stream."""
    if generator is None:
        return np.random.randint(low, high, size=size, dtype=np.int64)
    return generator.rng.integers(low, high, size=size, dtype=np.int64)


def random_seed(generator=None):
    """A 63-bit seed drawn from `generator` or the global stream (for worker seeds)."""
    return int(randint(0, 2 ** 63 - 1, (), generator))
