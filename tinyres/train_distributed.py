"""Data-parallel training: the Trainer on every rank of an MPI job, one shard each.

    mpiexec -n 2 python -m tinyres train --distributed --data digits --epochs 5
    (as root in a container: mpiexec --allow-run-as-root -n 2 ..., or export
     OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)

Every rank builds the same model (rank 0's weights are broadcast), converts its BatchNorms
to SyncBatchNorm, and trains it wrapped in DistributedDataParallel on its shard of each
epoch (DistributedSampler, seeded by --seed, reshuffled per epoch). --batch-size is per
rank: a step sees batch_size x world_size images. Each rank evaluates its share of the
test set and the sums are all-reduced, so every rank gets the whole set's loss and
accuracy. Rank 0 alone prints, shows progress bars and writes metrics, figures and
checkpoints; a checkpoint holds the plain model's state and resumes under any world size
(or without MPI), continuing from its epoch.
"""
import contextlib
import io
from dataclasses import replace

import numpy as np

import tinyres
import tinyres.distributed as dist
from tinyres import data
from tinyres.nn import SyncBatchNorm
from tinyres.nn.parallel import DistributedDataParallel
from tinyres.train import Trainer
from tinyres.utils.data import DistributedSampler


class RankShard:
    """Rank r's part of a dataset: items r, r + R, r + 2R, ... (no padding: an evaluation
    counts each test image once)."""

    def __init__(self, dataset, rank, world_size):
        self.dataset, self.rank, self.world_size = dataset, rank, world_size

    def __len__(self):
        return len(range(self.rank, len(self.dataset), self.world_size))

    def get_batch(self, indices):
        return self.dataset.get_batch(self.rank + self.world_size * np.asarray(indices))


class ShardedLoader:
    """Training batches of this rank's shard, in the order of a DistributedSampler; the
    interface of tinyres.data.DataLoader (iteration, len, state_dict)."""

    def __init__(self, dataset, batch_size, sampler, device):
        self.dataset, self.batch_size = dataset, batch_size
        self.sampler, self.device = sampler, device

    def __len__(self):
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = np.array(list(self.sampler), dtype=np.int64)
        for start in range(0, len(order), self.batch_size):
            images, labels = self.dataset.get_batch(order[start:start + self.batch_size])
            yield (tinyres.tensor(images, device=self.device),
                   tinyres.tensor(labels, dtype=np.int64, device=self.device))

    def state_dict(self):
        """The order is a function of (seed, epoch): nothing else to keep."""
        return {"distributed_sampler": {"seed": self.sampler.seed,
                                        "epoch": self.sampler.epoch}}

    def load_state_dict(self, state):
        """Any loader state (a single-process one too): the epoch, set by train_epoch,
        decides the order."""


class DistributedTrainer(Trainer):
    """Trainer for one rank of a data-parallel job (joins the MPI process group)."""

    def __init__(self, config):
        if not dist.is_initialized():
            dist.init_process_group("mpi")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if self.rank != 0:      # only rank 0 prints and writes
            config = replace(config, save=None, metrics=None, figure=None, quiet=True)
        super().__init__(config)
        self._shard_loaders()
        self.model = SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.ddp = DistributedDataParallel(self.model)

    def _shard_loaders(self):
        if isinstance(self.train_loader, ShardedLoader):
            return
        self.sampler = DistributedSampler(self.train_set, self.world_size, self.rank,
                                          shuffle=True, seed=self.config.seed)
        self.train_loader = ShardedLoader(self.train_set, self.config.batch_size,
                                          self.sampler, self.config.device)
        self.test_loader = data.DataLoader(RankShard(self.test_set, self.rank,
                                                     self.world_size),
                                           self.config.eval_batch_size,
                                           device=self.config.device)

    def restore(self, ckpt):
        self._shard_loaders()
        super().restore(ckpt)

    def _seed_augmentation(self, epoch):
        """Each rank's crops and flips for `epoch`: a stream of (seed, epoch, rank), so a
        resumed run (any world size) draws them from the epoch alone."""
        fresh = np.random.default_rng([self.config.seed, epoch, self.rank])
        self.aug_rng.bit_generator.state = fresh.bit_generator.state

    def _reduced(self, loss_sum, correct, seen):
        totals = tinyres.tensor([loss_sum, correct, seen], dtype=tinyres.float64)
        dist.all_reduce(totals)
        loss_sum, correct, seen = totals.tolist()
        return loss_sum / max(seen, 1), correct / max(seen, 1)

    def train_epoch(self, epoch):
        """One epoch on this rank's shard through DDP; (loss, accuracy) over all ranks."""
        self.sampler.set_epoch(epoch)
        self._seed_augmentation(epoch)
        return self._reduced(*self.training_pass(epoch, self.ddp))

    def evaluate(self, loader=None):
        """(loss, accuracy) over the whole test set: each rank its shard, sums reduced."""
        loader = loader or self.test_loader
        seen = len(loader.dataset)
        loss, acc = super().evaluate(loader) if seen else (0.0, 0.0)
        return self._reduced(loss * seen, acc * seen, seen)


@contextlib.contextmanager
def rank_zero_prints():
    """Join the process group; inside, stdout of ranks other than 0 goes nowhere."""
    if not dist.is_initialized():
        dist.init_process_group("mpi")
    if dist.get_rank() == 0:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield
