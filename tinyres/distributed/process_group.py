"""The default process group: init_process_group, the rank queries, and the collectives on
Tensors (in place, as torch.distributed's), with async_op=True returning a Work to wait on.

init_process_group also installs an excepthook: an uncaught exception on any rank prints
that rank's traceback and aborts the whole job (MPI_Abort), so that the other ranks do not
wait forever in their next collective. destroy_process_group puts the old hook back.
"""
import datetime
import importlib.util
import os
import sys
import traceback

import numpy as np

from tinyres.backend import get_array_module, is_cuda_array
from tinyres.distributed.errors import ReduceOp
from tinyres.distributed.mpi_backend import MPIGroup
from tinyres.distributed.nccl_backend import NCCLGroup

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)      # torch's default_pg_timeout
NOT_INITIALIZED = ("Default process group has not been initialized, please make sure to "
                   "call init_process_group.")
_default = {"group": None, "excepthook": None}


# ----- availability and set-up ----------------------------------------------------------
def is_mpi_available():
    """True when mpi4py can be imported (nothing is initialised)."""
    return importlib.util.find_spec("mpi4py") is not None


def is_nccl_available():
    """True when CuPy's NCCL binding can be imported."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        from cupy.cuda import nccl
    except ImportError:
        return False
    return bool(getattr(nccl, "available", False))


def is_available():
    """True when some backend (MPI or NCCL) can be used."""
    return is_mpi_available() or is_nccl_available()


def is_initialized():
    """True between init_process_group and destroy_process_group."""
    return _default["group"] is not None


def _env_int(*names):
    for name in names:
        if os.environ.get(name, "") != "":
            return name, int(os.environ[name])
    return None, None


def _check_launch(group, rank, world_size):
    """The explicit rank/world_size, or else RANK/WORLD_SIZE, must agree with MPI's."""
    for what, given, env, actual in (("world_size", world_size, "WORLD_SIZE", group.size),
                                     ("rank", rank, "RANK", group.rank)):
        source = f"{what}={given}"
        if given is None or given < 0:
            name, given = _env_int(env)
            source = f"{name}={given}"
        if given is not None and given != actual:
            launched = "" if group.size > 1 else (
                f": start the job with mpiexec -n {given if what == 'world_size' else 'N'}"
                " python ..., MPI is what connects the processes")
            raise ValueError(f"init_process_group: {source} but MPI gives this process "
                             f"{what} {actual}{launched}")


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1,
                       store=None, group_name="", pg_options=None, device_id=None):
    """Join the default group. backend: "mpi" (CPU arrays; the default) or "nccl" (CuPy
    arrays). Rank and world size come from MPI (start the job with mpiexec); world_size,
    rank, or the RANK/WORLD_SIZE environment, when given, must agree with them."""
    if is_initialized():
        raise ValueError("trying to initialize the default process group twice!")
    backend = "mpi" if backend is None else str(backend).lower()
    if backend not in ("mpi", "nccl"):
        raise ValueError(f"init_process_group: invalid backend {backend!r}: tinyres has "
                         "'mpi' (CPU) and 'nccl' (GPU)")
    if init_method not in (None, "env://") or store is not None:
        raise ValueError("init_process_group: tinyres finds the other ranks through MPI "
                         "(mpiexec); init_method and store are not supported")
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    if not isinstance(timeout, datetime.timedelta):
        raise TypeError(f"Expected timeout argument to be of type datetime.timedelta, got "
                        f"{type(timeout).__name__}")
    seconds = timeout.total_seconds()
    group = MPIGroup(seconds) if backend == "mpi" else NCCLGroup(seconds, device_id)
    try:
        _check_launch(group, rank, world_size)
    except ValueError:
        group.close()
        raise
    _default["group"] = group
    _default["excepthook"] = sys.excepthook
    sys.excepthook = _abort_job_hook(group, sys.excepthook)


def _abort_job_hook(group, previous):
    """An excepthook printing the rank's traceback (each line tagged [rank r]) and then
    aborting every rank of the job."""
    def abort_job(exc_type, exc, tb):
        lines = "".join(traceback.format_exception(exc_type, exc, tb)).splitlines()
        sys.stderr.write("".join(f"[rank {group.rank}] {line}\n" for line in lines))
        sys.stderr.write(f"[rank {group.rank}] tinyres.distributed: rank {group.rank} of "
                         f"{group.size} failed; aborting the job\n")
        sys.stderr.flush()
        group.abort(1)
    return abort_job


def destroy_process_group(group=None):
    """Leave the default group (and put the previous excepthook back)."""
    if not is_initialized():
        raise AssertionError("Process group cannot be None")
    _default["group"].close()
    sys.excepthook = _default["excepthook"]
    _default.update(group=None, excepthook=None)


def default_group(group=None):
    """The group a collective runs in: the default one (the only one tinyres has)."""
    if not is_initialized():
        raise ValueError(NOT_INITIALIZED)
    if group is not None and group is not _default["group"]:
        raise NotImplementedError("tinyres.distributed has only the default group "
                                  "(new_group is not implemented)")
    return _default["group"]


def get_rank(group=None):
    """This process's rank, 0 .. world size - 1."""
    return default_group(group).rank


def get_world_size(group=None):
    """How many processes the group has."""
    return default_group(group).size


def get_backend(group=None):
    """'mpi' or 'nccl'."""
    return default_group(group).name


# ----- collectives on Tensors -----------------------------------------------------------
class Work:
    """A collective in flight. wait() blocks until it is done (or the timeout passes:
    DistBackendError) and then writes the result into the tensors; is_completed() polls."""

    def __init__(self, request, finish):
        self._request, self._finish, self._done = request, finish, False

    def is_completed(self):
        return self._done or self._request.test()

    def wait(self, timeout=None):
        if not self._done:
            self._request.wait(None if timeout is None else
                               getattr(timeout, "total_seconds", lambda: timeout)())
            self._finish()
            self._done = True
        return True


def _check_tensor(op, group, tensor):
    from tinyres.tensor import Tensor
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{op}: expected a tinyres Tensor, got {type(tensor).__name__}")
    if (group.name == "nccl") != is_cuda_array(tensor.array):
        where = "CUDA" if group.name == "nccl" else "CPU"
        raise ValueError(f"{op}: the {group.name!r} backend takes {where} tensors, got one on "
                         f"{'cuda' if is_cuda_array(tensor.array) else 'cpu'}")


def _contiguous(tensor):
    """The tensor's array if it is C-contiguous (the collective writes in place), else a
    contiguous copy that _written copies back."""
    array = tensor.array
    flags = array.flags
    return array if flags["C_CONTIGUOUS"] else get_array_module(array).ascontiguousarray(array)


def _written(tensor, array):
    """Copy `array` into the tensor where it was a copy, and bump its version."""
    if array is not tensor.array:
        tensor.array[...] = array
    tensor._version_counter.value += 1


def _run(work, async_op):
    if async_op:
        return work
    work.wait()
    return None


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce `tensor` over every rank with `op`, in place: afterwards every rank holds the
    same result."""
    group = default_group(group)
    _check_tensor("all_reduce", group, tensor)
    if not isinstance(op, ReduceOp):
        raise TypeError(f"all_reduce: op must be a ReduceOp, got {op!r}")
    if op is ReduceOp.AVG and not np.issubdtype(tensor.dtype, np.floating):
        raise TypeError(f"all_reduce: ReduceOp.AVG needs a floating tensor, got "
                        f"{tensor.dtype}")
    array = _contiguous(tensor)
    request = group.allreduce(array, op)

    def finish():
        if op is ReduceOp.AVG:
            array[...] /= group.size
        _written(tensor, array)
    return _run(Work(request, finish), async_op)


def broadcast(tensor, src, group=None, async_op=False):
    """Copy rank `src`'s `tensor` into the same tensor on every other rank."""
    group = default_group(group)
    _check_tensor("broadcast", group, tensor)
    if not 0 <= src < group.size:
        raise RuntimeError(f"broadcast: invalid root rank: {src} (world size {group.size})")
    array = _contiguous(tensor)
    request = group.broadcast(array, src)
    return _run(Work(request, lambda: _written(tensor, array)), async_op)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """tensor_list[r] receives rank r's `tensor`, on every rank."""
    group = default_group(group)
    _check_tensor("all_gather", group, tensor)
    if len(tensor_list) != group.size:
        raise RuntimeError(f"all_gather: invalid output tensor list (expected length "
                           f"{group.size}, got {len(tensor_list)})")
    for i, out in enumerate(tensor_list):
        _check_tensor("all_gather", group, out)
        if out.shape != tensor.shape or out.dtype != tensor.dtype:
            raise RuntimeError(f"all_gather: output tensor {i} has shape {out.shape} and "
                               f"dtype {out.dtype}; expected the input's {tensor.shape} "
                               f"and {tensor.dtype}")
    xp = get_array_module(tensor.array)
    gathered = xp.empty((group.size,) + tensor.shape, dtype=tensor.dtype)
    request = group.allgather(gathered, xp.ascontiguousarray(tensor.array))

    def finish():
        for out, part in zip(tensor_list, gathered):
            out.array[...] = part
            out._version_counter.value += 1
    return _run(Work(request, finish), async_op)


def barrier(group=None, async_op=False, device_ids=None):
    """Wait until every rank has reached this barrier."""
    group = default_group(group)
    return _run(Work(group.barrier(), lambda: None), async_op)
