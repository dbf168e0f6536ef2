"""DataLoader: shuffled mini-batches as Tensors, with a resumable random order.

    loader = DataLoader(train_set, batch_size=128, shuffle=True, seed=0)
    for images, labels in loader:        # Tensor float32 (B, C, H, W), Tensor int64 (B,)
        ...

The order of each epoch is one permutation drawn from the loader's own
numpy.random.Generator when iteration starts. `state_dict()` captures that generator, so
a run restored from a checkpoint draws the same permutations as one never interrupted.

With a CUDA `device` and pin_memory=True the batches travel through pinned host memory on
a side stream, one batch ahead (tinyres.data.pinned.PinnedCopier): the host never waits
for the GPU to take a batch. On the CPU pin_memory changes nothing.
"""
import numpy as np

import tinyres
from tinyres import backend
from tinyres.tensor import Tensor


class DataLoader:
    """Batches of `dataset` (which should have get_batch(indices); otherwise samples are
    stacked one by one). `seed` is anything numpy.random.default_rng accepts."""

    def __init__(self, dataset, batch_size=1, shuffle=False, seed=None, drop_last=False,
                 device="cpu", pin_memory=False):
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.device = device
        self.pin_memory = bool(pin_memory)
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else (n + b - 1) // b

    def batch_indices(self):
        """This epoch's index batches (draws the permutation when shuffling)."""
        n = len(self.dataset)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        stop = len(self) * self.batch_size
        return [order[i:i + self.batch_size] for i in range(0, min(stop, n), self.batch_size)]

    def __iter__(self):
        if self.pin_memory and backend.as_device(self.device).type == "cuda":
            yield from self._pinned_batches()
            return
        for indices in self.batch_indices():
            images, labels = self._fetch(indices)
            yield (tinyres.tensor(images, device=self.device),
                   tinyres.tensor(labels, dtype=np.int64, device=self.device))

    def _pinned_batches(self):
        """The batches copied through pinned memory, batch k + 1 staged before batch k is
        handed out (its copy overlaps the work queued for batch k)."""
        from tinyres.data.pinned import PinnedCopier
        copier = PinnedCopier(self.device)
        staged = None
        for indices in self.batch_indices():
            images, labels = self._fetch(indices)
            arrays = [np.asarray(images), np.asarray(labels, dtype=np.int64)]
            following = copier.start(arrays)
            if staged is not None:
                yield tuple(Tensor(a) for a in copier.finish(staged))
            staged = following
        if staged is not None:
            yield tuple(Tensor(a) for a in copier.finish(staged))

    def _fetch(self, indices):
        if hasattr(self.dataset, "get_batch"):
            return self.dataset.get_batch(indices)
        samples = [self.dataset[int(i)] for i in indices]
        return (np.stack([np.asarray(x, dtype=np.float32) for x, _ in samples]),
                np.array([y for _, y in samples], dtype=np.int64))

    def state_dict(self):
        """The shuffle generator's state (a JSON-friendly dict)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
