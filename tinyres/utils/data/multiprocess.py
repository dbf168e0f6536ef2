"""The main process's side of a DataLoader with workers: hand out tasks, reorder results.

Up to prefetch_factor * num_workers batches are in flight. Task n goes to the next worker
(round-robin) that has not run out of data; results come back in any order and are held
until task n's has arrived, so next() yields batches in sampler order. Workers are daemonic,
and are told to stop (then joined, then terminated if need be) when the iterator is done,
deleted or garbage-collected, so neither an early `break` nor the end of the program hangs.
"""
import itertools
import queue

from tinyres.data.pinned import pinning_for
from tinyres.random import random_seed
from tinyres.utils.data.worker import (ExceptionWrapper, IterationEnd, ResumeIteration,
                                       worker_loop)

JOIN_SECONDS = 5.0
WATCH_SECONDS = 5.0           # how often a waiting main process checks its workers live


class MultiProcessIter:
    """Iterator over a DataLoader's batches, built by num_workers worker processes."""

    def __init__(self, loader, ctx):
        self._shutdown = True
        if loader.prefetch_factor < 1:
            raise AssertionError("prefetch_factor must be positive with workers")
        self._num_workers = loader.num_workers
        self._prefetch = loader.prefetch_factor * loader.num_workers
        self._timeout = loader.timeout
        self._persistent = loader.persistent_workers
        self._base_seed = random_seed(loader.generator)
        self._pinning = pinning_for(loader)
        self._result_queue = ctx.Queue()
        self._index_queues, self._workers = [], []
        self._shutdown = False               # from here on, stop whatever was started
        for worker_id in range(self._num_workers):
            index_queue = ctx.Queue()
            index_queue.cancel_join_thread()
            worker = ctx.Process(target=worker_loop, daemon=True, args=(
                loader._iterable, loader.dataset, index_queue, self._result_queue,
                loader._auto_collation, loader.collate_fn, loader.drop_last,
                self._base_seed, loader.worker_init_fn, worker_id, self._num_workers))
            self._index_queues.append(index_queue)
            worker.start()
            self._workers.append(worker)
        self._start_epoch(loader)

    def _start_epoch(self, loader):
        self._sampler_iter = iter(loader._index_sampler)
        self._length = None if loader._iterable else len(loader)
        self._send_idx = self._rcvd_idx = 0
        self._task_worker, self._results = {}, {}
        self._active = [True] * self._num_workers
        self._cycle = itertools.cycle(range(self._num_workers))
        for _ in range(self._prefetch):
            self._put_task()

    def reset(self, loader):
        """A new epoch on the same (persistent) workers: drain the old one's tasks first."""
        random_seed(loader.generator)              # the draw a new iterator would make
        for index_queue in self._index_queues:
            index_queue.put(ResumeIteration())
        acks = 0
        while acks < self._num_workers:
            idx, _ = self._get_result()
            acks += isinstance(idx, ResumeIteration)
        self._start_epoch(loader)

    def _put_task(self):
        """Send the sampler's next batch of indices to the next active worker, if any."""
        if not any(self._active):
            return
        try:
            index = next(self._sampler_iter)
        except StopIteration:
            return
        worker_id = next(w for w in self._cycle if self._active[w])
        self._index_queues[worker_id].put((self._send_idx, index))
        self._task_worker[self._send_idx] = worker_id
        self._send_idx += 1

    @property
    def alive(self):
        """Whether the workers are still running (not shut down)."""
        return not self._shutdown

    def __iter__(self):
        return self

    def __len__(self):
        return self._length

    def __next__(self):
        while True:
            if self._rcvd_idx == self._send_idx:       # nothing in flight: all done
                if not self._persistent:
                    self._shutdown_workers()
                raise StopIteration
            while self._rcvd_idx not in self._results:
                idx, data = self._get_result()
                if idx in self._task_worker:           # (stale epochs' results are dropped)
                    self._results[idx] = data
            data = self._results.pop(self._rcvd_idx)
            del self._task_worker[self._rcvd_idx]
            self._rcvd_idx += 1
            if isinstance(data, IterationEnd):
                self._active[data.worker_id] = False
            self._put_task()
            if isinstance(data, ExceptionWrapper):
                self._shutdown_workers()
                data.reraise()
            if not isinstance(data, IterationEnd):
                return self._pinning(data)

    def _get_result(self):
        """The next (task number, batch) from any worker, honouring the loader's timeout
        and noticing workers that died."""
        while True:
            wait = self._timeout if self._timeout > 0 else WATCH_SECONDS
            try:
                return self._result_queue.get(timeout=wait)
            except queue.Empty:
                if self._timeout > 0:
                    self._shutdown_workers()
                    raise RuntimeError(f"DataLoader timed out after {self._timeout} "
                                       f"seconds") from None
                self._check_workers()

    def _check_workers(self):
        dead = [str(w.pid) for w in self._workers if not w.is_alive()]
        if dead:
            self._shutdown_workers()
            raise RuntimeError(f"DataLoader worker (pid(s) {', '.join(dead)}) exited "
                               f"unexpectedly")

    def _shutdown_workers(self):
        """Stop every worker: ask, wait a little, then terminate stragglers."""
        if self._shutdown:
            return
        self._shutdown = True
        for index_queue in self._index_queues:
            index_queue.put(None)
        for worker in self._workers:
            if worker.pid is None:                       # never started
                continue
            worker.join(timeout=JOIN_SECONDS)
            if worker.is_alive():
                worker.terminate()
        for q in self._index_queues + [self._result_queue]:
            q.cancel_join_thread()
            q.close()

    def __del__(self):
        self._shutdown_workers()
