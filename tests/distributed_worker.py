"""Programs that tests/test_distributed.py runs under `mpiexec -n 2`, one per scenario.

    mpiexec -n 2 python tests/distributed_worker.py main OUT.json

main: collectives, the sampler, DDP exactness (a model without BN; ResNet-20 with
SyncBatchNorm and with plain BatchNorm), no_sync and the bucket launches; rank 0 writes the
figures to OUT.json. fail, timeout, shapes: a planted failure, a rank skipping a barrier,
and mismatched models (each must end the job, not hang).
"""
import datetime
import json
import sys
import time

import numpy as np

import tinyres
import tinyres.distributed as dist
import tinyres.nn.functional as F
from tinyres import nn
from tinyres.models import resnet20
from tinyres.nn.parallel import DistributedDataParallel
from tinyres.utils.data import DistributedSampler


def check_collectives(rank, size):
    """Each collective's result against the value worked out by hand."""
    out = {}
    t = tinyres.tensor([1.0 + rank, -2.0 * rank], dtype=tinyres.float64)
    ops = {"SUM": [3.0, -2.0], "AVG": [1.5, -1.0], "MAX": [2.0, 0.0], "MIN": [1.0, -2.0],
           "PRODUCT": [2.0, -0.0]}
    for name, expected in ops.items():
        x = t.clone()
        dist.all_reduce(x, op=getattr(dist.ReduceOp, name))
        out[name] = x.tolist() == expected
    x = tinyres.arange(6.0).reshape(2, 3).t() * (rank + 1)          # not contiguous
    work = dist.all_reduce(x, async_op=True)
    work.wait()
    out["noncontiguous_async"] = x.tolist() == (tinyres.arange(6.0).reshape(2, 3).t() * 3).tolist()
    b = tinyres.tensor([float(rank)] * 3)
    dist.broadcast(b, src=1)
    out["broadcast"] = b.tolist() == [1.0] * 3
    gathered = [tinyres.zeros(2, dtype=tinyres.int64) for _ in range(size)]
    dist.all_gather(gathered, tinyres.tensor([rank, 10 * rank]))
    out["all_gather"] = [g.tolist() for g in gathered] == [[0, 0], [1, 10]]
    return out


def check_sampler(rank, size):
    """Every rank's shard for 3 epochs of a 11-item set (padded to 12)."""
    sampler = DistributedSampler(list(range(11)), shuffle=True, seed=3)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        mine = tinyres.tensor(list(sampler))
        everyone = [tinyres.zeros_like(mine) for _ in range(size)]
        dist.all_gather(everyone, mine)
        epochs.append([e.tolist() for e in everyone])
    return {"num_replicas": sampler.num_replicas, "rank": sampler.rank, "epochs": epochs}


def small_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def train(model, x, y, steps=3, accumulate=False):
    """3 SGD steps; the gradients after each backward and the final parameters."""
    opt = tinyres.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    grads = []
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grads.append([p.grad.numpy().copy() for p in model.parameters()])
        opt.step()
    return grads, [p.detach().numpy().copy() for p in model.parameters()]


def max_diff(a, b):
    return max(float(np.abs(u - v).max()) for u, v in zip(a, b))


def compare(make, rank, size, x, y, sync_bn):
    """DDP on this rank's half against one process on the whole batch (rank 0's init)."""
    tinyres.manual_seed(0)
    reference = make().double()
    ref_grads, ref_params = train(reference, x, y)
    tinyres.manual_seed(rank)                       # rank 1 starts elsewhere: DDP fixes it
    model = make().double()
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = DistributedDataParallel(model, bucket_cap_mb=0.01)
    half = x.shape[0] // size
    shard = slice(rank * half, (rank + 1) * half)
    grads, params = train(ddp, x[shard], y[shard])
    result = {"grad": max(max_diff(g, r) for g, r in zip(grads, ref_grads)),
              "param": max_diff(params, ref_params)}
    buffers = [b.numpy() for n, b in model.named_buffers() if "running" in n]
    ref_buffers = [b.numpy() for n, b in reference.named_buffers() if "running" in n]
    if buffers:
        result["running_stats"] = max_diff(buffers, ref_buffers)
    result["launch_log_first"] = ddp._reducer.launch_log[:1] if rank == 0 else None
    return result, ddp


def check_no_sync(rank, size):
    """Two micro-batches, the first under no_sync: grads equal the reference's sum."""
    rng = np.random.default_rng(5)
    x = tinyres.tensor(rng.standard_normal((8, 3, 8, 8)))
    y = tinyres.tensor(rng.integers(0, 5, 8))
    tinyres.manual_seed(0)
    reference = small_model().double()
    for part in (slice(0, 4), slice(4, 8)):
        F.cross_entropy(reference(x[part]), y[part]).backward()
    tinyres.manual_seed(0)
    ddp = DistributedDataParallel(small_model().double())
    mine = [slice(2 * rank, 2 * rank + 2), slice(4 + 2 * rank, 4 + 2 * rank + 2)]
    with ddp.no_sync():
        F.cross_entropy(ddp(x[mine[0]]), y[mine[0]]).backward()
    local = float(sum((p.grad * p.grad).sum().item() for p in ddp.parameters()))
    F.cross_entropy(ddp(x[mine[1]]), y[mine[1]]).backward()
    diff = max_diff([p.grad.numpy() for p in ddp.parameters()],
                    [p.grad.numpy() for p in reference.parameters()])
    return {"diff": diff, "local_norm_after_no_sync": local}


def against_torch_ddp(rank, size, x, y):
    """The same model, weights and shards through torch's DDP (gloo) and ours: the
    gradients after one backward and the parameters after 3 SGD steps."""
    import os
    import socket
    import torch
    import torch.distributed as tdist
    port = None
    if rank == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    port = dist.process_group.default_group().allgather_object(port, "port")[0]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=size)
    torch.manual_seed(rank)
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 6 * 6, 5)).double()
    theirs = torch.nn.parallel.DistributedDataParallel(theirs)    # rank 0's weights
    ours = small_model().double()
    ours.load_state_dict({k: v.detach().numpy().copy()
                          for k, v in theirs.module.state_dict().items()})
    ours = DistributedDataParallel(ours)
    half = x.shape[0] // size
    shard = slice(rank * half, (rank + 1) * half)
    xt, yt = torch.tensor(x.numpy()[shard]), torch.tensor(y.numpy()[shard])
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    grads_t = []
    for _ in range(3):
        opt_t.zero_grad()
        torch.nn.functional.cross_entropy(theirs(xt), yt).backward()
        grads_t.append([p.grad.numpy().copy() for p in theirs.parameters()])
        opt_t.step()
    grads, params = train(ours, x[shard], y[shard])
    tdist.destroy_process_group()
    return {"grad": max(max_diff(g, r) for g, r in zip(grads, grads_t)),
            "param": max_diff(params, [p.detach().numpy() for p in theirs.parameters()])}


def main(path):
    dist.init_process_group("mpi", timeout=datetime.timedelta(seconds=60))
    rank, size = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(0)
    x = tinyres.tensor(rng.standard_normal((8, 3, 8, 8)))
    y = tinyres.tensor(rng.integers(0, 5, 8))
    images = tinyres.tensor(rng.standard_normal((8, 3, 16, 16)))
    labels = tinyres.tensor(rng.integers(0, 10, 8))
    result = {"collectives": check_collectives(rank, size),
              "sampler": check_sampler(rank, size)}
    result["no_bn"], ddp = compare(small_model, rank, size, x, y, sync_bn=False)
    result["plan_small"] = ddp.bucket_plan()
    result["syncbn"], ddp = compare(resnet20, rank, size, images, labels, sync_bn=True)
    result["plan_resnet20"] = ddp.bucket_plan()
    result["plain_bn"], _ = compare(resnet20, rank, size, images, labels, sync_bn=False)
    result["no_sync"] = check_no_sync(rank, size)
    try:
        import torch  # noqa: F401
        result["torch_ddp"] = against_torch_ddp(rank, size, x, y)
    except ImportError:
        result["torch_ddp"] = None
    everyone = dist.process_group.default_group().allgather_object(result, "results")
    if rank == 0:
        with open(path, "w") as f:
            json.dump(everyone, f)
    dist.destroy_process_group()


def planted_failure():
    dist.init_process_group("mpi")
    if dist.get_rank() == 1:
        raise ValueError("planted failure on rank 1")
    dist.barrier()                  # rank 0 would wait here forever without the abort


def skipped_barrier():
    dist.init_process_group("mpi", timeout=datetime.timedelta(seconds=2))
    if dist.get_rank() == 1:
        time.sleep(60)              # never reaches the barrier
    dist.barrier()


def reduced_evaluation(path):
    """The test set evaluated in two shards and reduced, against one pass over all of it."""
    from tinyres import data
    from tinyres.train import Trainer, TrainConfig
    from tinyres.train_distributed import DistributedTrainer
    trainer = DistributedTrainer(TrainConfig(data="synthetic", subset=64, epochs=1,
                                             quiet=True, save=path + ".npz"))
    shards = trainer.evaluate()
    whole = Trainer.evaluate(trainer, data.DataLoader(trainer.test_set, 256))
    everyone = dist.process_group.default_group().allgather_object(
        {"shards": shards, "whole": whole, "shard_size": len(trainer.test_loader.dataset),
         "save": trainer.config.save}, "results")
    if dist.get_rank() == 0:
        with open(path, "w") as f:
            json.dump(everyone, f)


def mismatched_shapes():
    dist.init_process_group("mpi")
    DistributedDataParallel(nn.Linear(4 + dist.get_rank(), 3))


if __name__ == "__main__":
    scenario = sys.argv[1]
    if scenario == "main":
        main(sys.argv[2])
    elif scenario == "evaluate":
        reduced_evaluation(sys.argv[2])
    else:
        {"fail": planted_failure, "timeout": skipped_barrier,
         "shapes": mismatched_shapes}[scenario]()
