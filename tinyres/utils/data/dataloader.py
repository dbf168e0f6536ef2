"""DataLoader: batches from a dataset, as torch.utils.data.DataLoader.

    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=2,
                        generator=tinyres.Generator().manual_seed(0))
    for images, labels in loader:
        ...

The arguments, their defaults and their conflicts are torch's. Shuffling draws from
`generator` or from the global stream seeded by tinyres.manual_seed: one seed, one order,
but not torch's order. With num_workers > 0 the batches are built in worker processes
(see worker.py), started with the "fork" method where the system has it (as torch on
Linux, so datasets, lambdas and classes defined in a script's __main__ work unpickled) or
the given `multiprocessing_context`; the batches and their order equal num_workers=0's.
`pin_memory=True` copies each batch's tensors into pinned host memory where CUDA is
usable (tinyres.data.pinned.pin_batch: a later copy to the GPU is then asynchronous) and,
as torch, only warns where there is no accelerator; `in_order=False` is accepted and
batches still come in order. Keep workers on NumPy: a forked process cannot use a GPU its
parent has already initialised.
"""
import math
import multiprocessing

from tinyres.data.pinned import pinning_for
from tinyres.random import random_seed
from tinyres.utils.data.collate import default_collate, default_convert
from tinyres.utils.data.dataset import IterableDataset
from tinyres.utils.data.multiprocess import MultiProcessIter
from tinyres.utils.data.fetch import make_fetcher
from tinyres.utils.data.sampler import (BatchSampler, RandomSampler, Sampler,
                                        SequentialSampler)

FROZEN = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset",
          "persistent_workers")


class _InfiniteConstantSampler(Sampler):
    """The sampler of an IterableDataset: None forever (the dataset decides the end)."""

    def __iter__(self):
        while True:
            yield None


class DataLoader:
    """Iterate over `dataset` in batches; see the module docstring."""

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
                 worker_init_fn=None, multiprocessing_context=None, generator=None, *,
                 prefetch_factor=None, persistent_workers=False, pin_memory_device="",
                 in_order=True):
        prefetch_factor = _check_worker_options(num_workers, timeout, prefetch_factor,
                                                persistent_workers)
        iterable = isinstance(dataset, IterableDataset)
        if iterable:
            _check_iterable_options(shuffle, sampler, batch_sampler)
        shuffle = bool(shuffle)
        _check_sampling_options(batch_size, shuffle, sampler, batch_sampler, drop_last)
        if batch_sampler is not None:
            batch_size, drop_last = None, False
        if sampler is None:
            sampler = (_InfiniteConstantSampler() if iterable else
                       RandomSampler(dataset, generator=generator) if shuffle else
                       SequentialSampler(dataset))
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self.pin_memory, self.pin_memory_device = pin_memory, pin_memory_device
        self.timeout, self.worker_init_fn = timeout, worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.generator, self.in_order = generator, in_order
        self.collate_fn = collate_fn or (default_collate if self._auto_collation
                                         else default_convert)
        self.persistent_workers = persistent_workers
        self._iterable = iterable
        self._iterator = None
        self.__initialized = True

    def __setattr__(self, name, value):
        if self.__dict__.get("_DataLoader__initialized") and name in FROZEN:
            raise ValueError(f"{name} attribute should not be set after "
                             f"{type(self).__name__} is initialized")
        super().__setattr__(name, value)

    @property
    def _auto_collation(self):
        return self.batch_sampler is not None

    @property
    def _index_sampler(self):
        return self.batch_sampler if self._auto_collation else self.sampler

    def __iter__(self):
        if self.num_workers == 0:
            return _SingleProcessIter(self)
        if not self.persistent_workers:
            return MultiProcessIter(self, _context(self.multiprocessing_context))
        if self._iterator is None or not self._iterator.alive:
            self._iterator = MultiProcessIter(self, _context(self.multiprocessing_context))
        else:
            self._iterator.reset(self)
        return self._iterator

    def __len__(self):
        if not self._iterable:
            return len(self._index_sampler)
        length = len(self.dataset)
        if self.batch_size is not None:
            length = (length // self.batch_size if self.drop_last
                      else math.ceil(length / self.batch_size))
        return length

    def make_fetcher(self):
        """The fetcher both paths use to build one batch."""
        return make_fetcher(self._iterable, self.dataset, self._auto_collation,
                            self.collate_fn, self.drop_last)


class _SingleProcessIter:
    """Batches built in this process, one per next()."""

    def __init__(self, loader):
        self._base_seed = random_seed(loader.generator)   # drawn as with workers
        self._sampler_iter = iter(loader._index_sampler)
        self._fetcher = loader.make_fetcher()
        self._length = len(loader) if not loader._iterable else None
        self._pinning = pinning_for(loader)

    def __iter__(self):
        return self

    def __next__(self):
        index = next(self._sampler_iter)
        return self._pinning(self._fetcher.fetch(index))

    def __len__(self):
        return self._length


def _check_worker_options(num_workers, timeout, prefetch_factor, persistent_workers):
    """torch's checks of the worker arguments; returns prefetch_factor (2 by default)."""
    if num_workers < 0:
        raise ValueError("num_workers option should be non-negative; use num_workers=0 to "
                         "disable multiprocessing.")
    if timeout < 0:
        raise ValueError("timeout option should be non-negative")
    if num_workers == 0 and prefetch_factor is not None:
        raise ValueError("prefetch_factor option could only be specified in multiprocessing."
                         "let num_workers > 0 to enable multiprocessing, otherwise set "
                         "prefetch_factor to None.")
    if num_workers > 0 and prefetch_factor is None:
        prefetch_factor = 2
    elif prefetch_factor is not None and prefetch_factor < 0:
        raise ValueError("prefetch_factor option should be non-negative")
    if persistent_workers and num_workers == 0:
        raise ValueError("persistent_workers option needs num_workers > 0")
    return prefetch_factor


def _check_iterable_options(shuffle, sampler, batch_sampler):
    if shuffle not in {False, None}:
        raise ValueError(f"DataLoader with IterableDataset: expected unspecified shuffle "
                         f"option, but got shuffle={shuffle}")
    if sampler is not None:
        raise ValueError(f"DataLoader with IterableDataset: expected unspecified sampler "
                         f"option, but got sampler={sampler}")
    if batch_sampler is not None:
        raise ValueError(f"DataLoader with IterableDataset: expected unspecified "
                         f"batch_sampler option, but got batch_sampler={batch_sampler}")


def _check_sampling_options(batch_size, shuffle, sampler, batch_sampler, drop_last):
    if sampler is not None and shuffle:
        raise ValueError("sampler option is mutually exclusive with shuffle")
    if batch_sampler is not None:
        if batch_size != 1 or shuffle or sampler is not None or drop_last:
            raise ValueError("batch_sampler option is mutually exclusive with batch_size, "
                             "shuffle, sampler, and drop_last")
    elif batch_size is None and drop_last:
        raise ValueError("batch_size=None option disables auto-batching and is mutually "
                         "exclusive with drop_last")


def _context(multiprocessing_context):
    """The multiprocessing context for workers: the one given (a name or a context),
    else fork where available, else the platform default."""
    if multiprocessing_context is None:
        methods = multiprocessing.get_all_start_methods()
        return multiprocessing.get_context("fork" if "fork" in methods else None)
    if isinstance(multiprocessing_context, str):
        return multiprocessing.get_context(multiprocessing_context)
    return multiprocessing_context


