"""DistributedSampler: each rank's shard of a data set, as torch.utils.data.distributed.

Rank r takes indices r, r + R, r + 2R, ... of one list that every rank builds alike: a
permutation seeded by seed + epoch (or 0..n-1 unshuffled), padded by repeating its head
until R divides it (or, with drop_last, cut to a multiple of R). So the shards are
disjoint and together cover the data set, and set_epoch reshuffles them all the same way.

    sampler = DistributedSampler(ds, num_replicas=2, rank=dist.get_rank())
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in DataLoader(ds, batch_size=64, sampler=sampler): ...

The permutation comes from tinyres.Generator (NumPy's PCG64), not torch's; the partition,
padding and lengths are torch's.
"""
import math

from tinyres.random import Generator, permutation
from tinyres.utils.data.sampler import Sampler


def _from_process_group(what):
    import tinyres.distributed as dist
    if not dist.is_available():
        raise RuntimeError("Requires distributed package to be available")
    return dist.get_world_size() if what == "num_replicas" else dist.get_rank()


class DistributedSampler(Sampler):
    """Indices of `dataset` for rank `rank` of `num_replicas` (both default to the process
    group's). shuffle: a fresh order per epoch from seed + epoch; drop_last: cut the tail
    instead of padding with the head."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        if num_replicas is None:
            num_replicas = _from_process_group("num_replicas")
        if rank is None:
            rank = _from_process_group("rank")
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.epoch, self.drop_last = 0, drop_last
        if self.drop_last and len(self.dataset) % self.num_replicas != 0:
            self.num_samples = math.ceil((len(self.dataset) - self.num_replicas)
                                         / self.num_replicas)
        else:
            self.num_samples = math.ceil(len(self.dataset) / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.shuffle, self.seed = shuffle, seed

    def _all_indices(self):
        """The list every rank shares: ordered, then padded or cut to total_size."""
        n = len(self.dataset)
        if self.shuffle:
            indices = permutation(n, Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            indices = list(range(n))
        if not self.drop_last:
            padding = self.total_size - len(indices)
            if padding <= len(indices):
                indices += indices[:padding]
            else:
                indices += (indices * math.ceil(padding / len(indices)))[:padding]
        else:
            indices = indices[:self.total_size]
        return indices

    def __iter__(self):
        indices = self._all_indices()[self.rank:self.total_size:self.num_replicas]
        return iter(indices)

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        """Set the epoch, so the next pass draws that epoch's order (same on every rank)."""
        self.epoch = epoch
