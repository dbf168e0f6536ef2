"""Data-parallel training under `mpiexec -n 2` on the CPU: each test reads what a program of
tests/distributed_worker.py did on two ranks. Skipped where mpi4py or mpiexec is missing.

The exactness figures: two ranks with half a batch each against one process with the
whole batch, float64, 3 SGD steps (momentum 0.9), gradients and parameters to 1e-10.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("mpi4py")
WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
MPIEXEC = (shutil.which("mpiexec", path=os.path.dirname(sys.executable))
           or shutil.which("mpiexec"))
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found")
EXACT = 1e-10


def mpirun(*args, timeout, python_args=None, cwd=None):
    """Run the worker (or `python_args`) on 2 ranks; (return code, stdout + stderr).
    Containers run as root, which Open MPI refuses unless told (OMPI_ALLOW_RUN_AS_ROOT)."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    python_args = python_args or [WORKER, *args]
    done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, *python_args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The main program's figures, one dict per rank."""
    path = tmp_path_factory.mktemp("ddp") / "out.json"
    code, output = mpirun("main", str(path), timeout=300)   # cold Numba caches compile
    assert code == 0, output
    with open(path) as f:
        return json.load(f)


def test_collectives_give_the_hand_worked_values(ranks):
    for rank in ranks:
        assert rank["collectives"] == {k: True for k in rank["collectives"]}
        assert len(rank["collectives"]) == 8


def test_ddp_without_bn_equals_one_process_on_the_whole_batch(ranks):
    for rank in ranks:
        assert rank["no_bn"]["grad"] < EXACT
        assert rank["no_bn"]["param"] < EXACT


def test_ddp_matches_torch_ddp_on_gloo(ranks):
    """Same weights, same shards, 3 SGD steps: tinyres's DDP on MPI against torch's on gloo."""
    if ranks[0]["torch_ddp"] is None:
        pytest.skip("torch is not installed")
    for rank in ranks:
        assert rank["torch_ddp"]["grad"] < EXACT
        assert rank["torch_ddp"]["param"] < EXACT


def test_resnet20_with_syncbatchnorm_is_exact(ranks):
    for rank in ranks:
        assert rank["syncbn"]["grad"] < EXACT
        assert rank["syncbn"]["param"] < EXACT
        assert rank["syncbn"]["running_stats"] < EXACT


def test_resnet20_with_plain_batchnorm_differs(ranks):
    """Each rank normalises its half by its half's statistics: not the whole batch's."""
    for rank in ranks:
        assert rank["plain_bn"]["grad"] > 1e-3
        assert rank["plain_bn"]["param"] > 1e-3


def test_first_bucket_starts_before_backward_ends(ranks):
    """ResNet-20 (65 gradients): bucket 0 (fc, layer3's tail) launched while most
    gradients were still to come: communication overlaps the rest of backward."""
    bucket, still_to_come = ranks[0]["syncbn"]["launch_log_first"][0]
    assert bucket == 0 and still_to_come > 30


def test_no_sync_accumulates_locally_then_averages(ranks):
    for rank in ranks:
        assert rank["no_sync"]["diff"] < EXACT
    local = [rank["no_sync"]["local_norm_after_no_sync"] for rank in ranks]
    assert abs(local[0] - local[1]) > 1e-6      # no all-reduce inside no_sync


def test_sampler_covers_every_index_once_per_epoch_and_reshuffles(ranks):
    epochs = ranks[0]["sampler"]["epochs"]
    assert [r["sampler"]["epochs"] for r in ranks] == [epochs, epochs]
    assert [(r["sampler"]["num_replicas"], r["sampler"]["rank"]) for r in ranks] == \
        [(2, 0), (2, 1)]
    for shards in epochs:
        together = shards[0] + shards[1]
        assert len(shards[0]) == len(shards[1]) == 6
        assert sorted(set(together)) == list(range(11))    # 11 items, one repeated as pad
    orders = [shards[0] + shards[1] for shards in epochs]
    assert orders[0] != orders[1] and orders[1] != orders[2]


def test_bucket_plan_lists_buckets_parameters_and_bytes(ranks):
    plan = ranks[0]["plan_resnet20"].splitlines()
    assert plan[0].startswith("DistributedDataParallel: ")
    assert "2,157,776 bytes" in plan[0]                  # 269,722 float64 gradients
    assert plan[1].startswith("bucket 0: ") and plan[2].split()[0] == "fc.bias"
    assert plan[-1].split()[0] == "conv1.weight"         # the first layer goes last


def test_planted_failure_ends_the_job_with_the_rank_and_error():
    code, output = mpirun("fail", timeout=60)
    assert code != 0
    assert "[rank 1] ValueError: planted failure on rank 1" in output
    assert "rank 1 of 2 failed; aborting the job" in output


def test_rank_missing_a_collective_is_a_timeout_not_a_hang():
    code, output = mpirun("timeout", timeout=60)
    assert code != 0
    assert "barrier did not complete within 2 s" in output
    assert "DistBackendError" in output


def test_mismatched_parameter_shapes_are_found_at_construction():
    code, output = mpirun("shapes", timeout=60)
    assert code != 0
    assert ("parameter 'weight' has shape (3, 5) (float32) on rank 1 but 'weight' has "
            "shape (3, 4) (float32) on rank 0") in output


def test_evaluation_over_shards_is_the_whole_test_set(tmp_path):
    path = tmp_path / "eval.json"
    code, output = mpirun("evaluate", str(path), timeout=300)
    assert code == 0, output
    ranks = json.loads(path.read_text())
    assert sum(r["shard_size"] for r in ranks) == 205 and ranks[1]["shard_size"] == 102
    for rank in ranks:
        assert rank["shards"][1] == pytest.approx(rank["whole"][1], abs=1e-12)   # accuracy
        assert rank["shards"][0] == pytest.approx(rank["whole"][0], rel=1e-5)    # loss
    assert ranks[0]["save"] is not None and ranks[1]["save"] is None   # rank 0 alone writes


TRAIN = ["-m", "tinyres", "train", "--distributed", "--data", "synthetic", "--subset", "128",
         "--batch-size", "32", "--schedule", "multistep", "--no-tune", "--quiet"]


def test_train_command_on_two_ranks_then_resume_on_one(tmp_path):
    code, output = mpirun(timeout=600, cwd=tmp_path, python_args=TRAIN + [
        "--epochs", "1", "--save", "a.npz", "--metrics", "a.json"])
    assert code == 0, output
    assert output.count("learned: test accuracy") == 1         # rank 0 alone prints
    first = json.loads((tmp_path / "a.json").read_text())["history"]
    assert [row["epoch"] for row in first] == [1]
    done = subprocess.run([sys.executable, *TRAIN, "--epochs", "2", "--resume", "a.npz",
                           "--metrics", "b.json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)                # world size 1, no mpiexec
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed from a.npz after epoch 1" in done.stdout
    history = json.loads((tmp_path / "b.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2] and history[0] == first[0]


def test_world_size_without_mpiexec_says_how_to_launch():
    """WORLD_SIZE=2 in a process MPI sees alone: a ValueError naming mpiexec."""
    code = "import tinyres.distributed as d; d.init_process_group('mpi')"
    env = dict(os.environ, WORLD_SIZE="2", RANK="0")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert ("ValueError: init_process_group: WORLD_SIZE=2 but MPI gives this process "
            "world_size 1: start the job with mpiexec -n 2 python ...") in done.stderr
