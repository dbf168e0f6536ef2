"""The NCCL engine (CuPy's cupy.cuda.nccl): collectives on GPU arrays, on a stream of their own.

MPI only starts the job: rank 0 makes the NCCL unique id and MPI broadcasts it, then every
rank joins one NCCL communicator on its GPU (the local rank, modulo the GPUs it sees). A
collective waits for the work already queued on the current stream, runs on the group's
own stream (so the backward pass goes on meanwhile) and records an event; waiting makes
the current stream wait for that event.
"""
import time

import numpy as np

from tinyres.distributed.errors import DistBackendError, ReduceOp, missing_engine
from tinyres.distributed.mpi_backend import MPI_INSTALL, MPIGroup

NCCL_INSTALL = f"CuPy with NCCL (pip install cupy-cuda13x nvidia-nccl-cu13) and {MPI_INSTALL}"


def import_nccl():
    """(cupy, cupy.cuda.nccl), or a RuntimeError naming the install command."""
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError as error:
        raise missing_engine("nccl", NCCL_INSTALL, error) from error
    if not getattr(nccl, "available", False):
        raise missing_engine("nccl", NCCL_INSTALL, "cupy.cuda.nccl is not available")
    return cupy, nccl


def _nccl_dtype(nccl, dtype):
    types = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32,
             "float64": nccl.NCCL_FLOAT64, "int32": nccl.NCCL_INT32,
             "int64": nccl.NCCL_INT64, "int8": nccl.NCCL_INT8, "uint8": nccl.NCCL_UINT8}
    name = np.dtype(dtype).name
    if name not in types:
        raise TypeError(f"tinyres.distributed (nccl): no NCCL type for dtype {name}")
    return types[name]


def _nccl_op(nccl, op):
    ops = {ReduceOp.SUM: nccl.NCCL_SUM, ReduceOp.AVG: nccl.NCCL_SUM,
           ReduceOp.PRODUCT: nccl.NCCL_PROD, ReduceOp.MIN: nccl.NCCL_MIN,
           ReduceOp.MAX: nccl.NCCL_MAX}
    if op not in ops:
        raise ValueError(f"tinyres.distributed (nccl): {op} is not an NCCL reduction")
    return ops[op]


class NCCLRequest:
    """A collective queued on the group's stream, marked by an event."""

    def __init__(self, event, what, group):
        self.event, self.what, self.group = event, what, group

    def test(self):
        return self.event.done

    def wait(self, timeout=None):
        """Make the current stream wait for the collective; if the GPU has not finished it
        within `timeout` seconds, raise DistBackendError."""
        timeout = self.group.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self.event.done:
            if time.monotonic() > deadline:
                raise DistBackendError(
                    f"rank {self.group.rank} of {self.group.size}: {self.what} (nccl) did "
                    f"not complete within {timeout:g} s: some rank has not reached it")
            time.sleep(1e-4)
        self.group.cupy.cuda.get_current_stream().wait_event(self.event)


class NCCLGroup:
    """The default group on NCCL, one GPU per rank."""

    name = "nccl"

    def __init__(self, timeout, device_id=None):
        self.cupy, self.nccl = import_nccl()
        self.mpi = MPIGroup(timeout)     # starts NCCL: unique id, barriers, shape check
        self.rank, self.size, self.timeout = self.mpi.rank, self.mpi.size, timeout
        self.local_rank = self.mpi.local_rank
        gpus = self.cupy.cuda.runtime.getDeviceCount()
        self.cupy.cuda.Device(self.local_rank % gpus if device_id is None else device_id).use()
        unique_id = self.nccl.get_unique_id() if self.rank == 0 else None
        unique_id = self.mpi.comm.bcast(unique_id, root=0)
        self.comm = self.nccl.NcclCommunicator(self.size, unique_id, self.rank)
        self.stream = self.cupy.cuda.Stream(non_blocking=True)

    def _launch(self, what, call):
        """Run call(stream_ptr) on the group's stream after the current stream's work."""
        ready = self.cupy.cuda.Event()
        ready.record(self.cupy.cuda.get_current_stream())
        self.stream.wait_event(ready)
        call(self.stream.ptr)
        done = self.cupy.cuda.Event()
        done.record(self.stream)
        return NCCLRequest(done, what, self)

    def allreduce(self, array, op, what="all_reduce"):
        ptr, dtype = array.data.ptr, _nccl_dtype(self.nccl, array.dtype)
        op = _nccl_op(self.nccl, op)
        return self._launch(what, lambda s: self.comm.allReduce(ptr, ptr, array.size, dtype,
                                                                op, s))

    def broadcast(self, array, src):
        ptr, dtype = array.data.ptr, _nccl_dtype(self.nccl, array.dtype)
        return self._launch("broadcast", lambda s: self.comm.broadcast(
            ptr, ptr, array.size, dtype, src, s))

    def allgather(self, out, array):
        dtype = _nccl_dtype(self.nccl, array.dtype)
        return self._launch("all_gather", lambda s: self.comm.allGather(
            array.data.ptr, out.data.ptr, array.size, dtype, s))

    def barrier(self):
        return self.mpi.barrier()

    def allgather_object(self, obj, what):
        return self.mpi.allgather_object(obj, what)

    def abort(self, code=1):
        self.comm.abort()
        self.mpi.abort(code)

    def close(self):
        self.comm.destroy()
        self.mpi.close()

