"""The DataLoader's worker processes: each one fetches whole batches, in parallel.

Worker k reads (task number, indices) from its own index queue, builds the batch with the
same fetcher and collate_fn as the main process, and puts (task number, batch) on the one
result queue. The main process hands batches out round-robin and puts the results back in
task order, so the batches are the ones num_workers=0 gives, in the same order.

Each worker seeds Python's `random` and NumPy's global generator (tinyres's stream) with
base_seed + k before calling worker_init_fn(k); base_seed is drawn once per loader
iterator from the loader's generator (or the global stream), as torch does.
"""
import os
import queue
import random
import sys
import traceback
from dataclasses import dataclass

import numpy as np

from tinyres.utils.data.fetch import make_fetcher

POLL_SECONDS = 5.0          # how often an idle worker checks that its parent still lives


@dataclass(frozen=True)
class WorkerInfo:
    """What get_worker_info() returns inside a worker."""
    id: int
    num_workers: int
    seed: int
    dataset: object


_worker_info = None


def get_worker_info():
    """This worker's WorkerInfo inside a DataLoader worker process; None in the main one."""
    return _worker_info


class ResumeIteration:
    """Sent to persistent workers at a new epoch: restart the dataset's iterator."""


class IterationEnd:
    """A worker's answer once its copy of an IterableDataset is exhausted."""

    def __init__(self, worker_id):
        self.worker_id = worker_id


class ExceptionWrapper:
    """An exception raised in a worker, carried to the main process with its traceback."""

    def __init__(self, where):
        exc_type, exc, _ = sys.exc_info()
        self.exc_type = exc_type
        self.msg = "".join(traceback.format_exception(exc_type, exc, exc.__traceback__))
        self.where = where

    def reraise(self):
        """Raise the same exception type, its message the worker's traceback."""
        msg = f"Caught {self.exc_type.__name__} {self.where}.\nOriginal {self.msg}"
        try:
            exception = self.exc_type(msg)
        except Exception:
            raise RuntimeError(msg) from None
        raise exception


def worker_loop(iterable, dataset, index_queue, data_queue, auto_collation, collate_fn,
                drop_last, base_seed, init_fn, worker_id, num_workers):
    """A worker's life: seed, init, then answer every task until told to stop (None)."""
    global _worker_info
    seed = base_seed + worker_id
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
    where = f"in DataLoader worker process {worker_id}"
    init_error, fetcher = None, None
    try:
        if init_fn is not None:
            init_fn(worker_id)
        fetcher = make_fetcher(iterable, dataset, auto_collation, collate_fn, drop_last)
    except Exception:
        init_error = ExceptionWrapper(where)
    parent = os.getppid()
    while True:
        task = _next_task(index_queue, parent)
        if task is None:
            break
        if isinstance(task, ResumeIteration):
            if init_error is None:
                fetcher = make_fetcher(iterable, dataset, auto_collation, collate_fn, drop_last)
            data_queue.put((task, None))
            continue
        idx, index = task
        if init_error is not None:
            data, init_error = init_error, None
        else:
            data = _fetch(fetcher, index, worker_id, where)
        data_queue.put((idx, data))
    data_queue.cancel_join_thread()


def _next_task(index_queue, parent):
    """The next task, or None when told to stop or when the parent process has died."""
    while True:
        try:
            return index_queue.get(timeout=POLL_SECONDS)
        except queue.Empty:
            if os.getppid() != parent:
                return None


def _fetch(fetcher, index, worker_id, where):
    try:
        return fetcher.fetch(index)
    except StopIteration:
        return IterationEnd(worker_id)
    except Exception:
        return ExceptionWrapper(where)
