"""Training, checkpoints and the command line: checkpoints round-trip and refuse damaged
files, a failed save keeps the last good one, a resumed run is bit-for-bit the
uninterrupted one, and `python -m tinyres` trains end to end and prints the probe table."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tinyres
from tinyres import checkpoint, nn
from tinyres.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tinyres.optim import SGD
from tinyres.optim.lr_scheduler import MultiStepLR
from tinyres.train import Trainer, TrainConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_setup(steps=2):
    """A tiny conv net, its SGD (with momentum buffers after a few steps) and schedule."""
    tinyres.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    sched = MultiStepLR(opt, milestones=[1, 3], gamma=0.5)
    x, y = tinyres.randn(6, 3, 4, 4), tinyres.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(steps):
        loss = tinyres.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, opt, sched


def save_small(path, epoch=2, extra=None):
    model, opt, sched = small_setup()
    rngs = {"numpy": checkpoint.numpy_rng_state(),
            "loader": np.random.default_rng(7).bit_generator.state}
    save_checkpoint(path, model, opt, sched, rngs, epoch=epoch, extra=extra or {"note": "hi"})
    return model, opt, sched, rngs


# ----- checkpoints ---------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path):
    path = str(tmp_path / "ckpt.npz")
    model, opt, sched, rngs = save_small(path, epoch=5, extra={"history": [{"a": 1.5}]})
    with np.load(path, allow_pickle=False) as archive:      # plain arrays only
        assert "sha256" in archive.files and "model/0.weight" in archive.files
    ckpt = load_checkpoint(path)
    assert ckpt.epoch == 5 and ckpt.extra == {"history": [{"a": 1.5}]}
    assert ckpt.rng_states == json.loads(json.dumps(rngs))
    fresh, fresh_opt, fresh_sched = small_setup(steps=0)
    fresh.load_state_dict(ckpt.model)
    fresh_opt.load_state_dict(ckpt.optimizer)
    fresh_sched.load_state_dict(ckpt.scheduler)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[k], v)
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(np.asarray(fresh_opt.state_dict()[k]), np.asarray(v))
    assert fresh_sched.state_dict() == sched.state_dict()
    assert fresh_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_numpy_global_rng_round_trip():
    np.random.seed(11)
    np.random.standard_normal()                    # leaves a cached gaussian
    state = json.loads(json.dumps(checkpoint.numpy_rng_state()))
    expected = np.random.standard_normal(5)
    np.random.seed(0)
    checkpoint.set_numpy_rng_state(state)
    np.testing.assert_array_equal(np.random.standard_normal(5), expected)


def test_flipped_byte_in_the_payload_is_detected(tmp_path):
    path = tmp_path / "ckpt.npz"
    model, *_ = save_small(str(path))
    raw = bytearray(path.read_bytes())
    weight = np.ascontiguousarray(model.state_dict()["4.weight"]).tobytes()
    at = raw.find(weight) + len(weight) // 2
    assert at > len(weight) // 2
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt") as err:
        load_checkpoint(str(path))
    assert str(path) in str(err.value)


def test_checksum_catches_a_changed_value_in_a_valid_archive(tmp_path):
    path = str(tmp_path / "ckpt.npz")
    save_small(path)
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["model/0.weight"] = arrays["model/0.weight"] + np.float32(1e-3)
    np.savez(path, **arrays)                      # a well-formed zip, stale checksum
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.5, 0.95, 0.0])
def test_truncated_file_is_detected(tmp_path, keep):
    path = tmp_path / "ckpt.npz"
    save_small(str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        load_checkpoint(str(path))
    assert str(path) in str(err.value)


def test_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "none.npz"))
    np.savez(tmp_path / "weights.npz", w=np.zeros(3))
    with pytest.raises(CheckpointError, match="missing entries"):
        load_checkpoint(str(tmp_path / "weights.npz"))


def test_failed_save_leaves_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save_small(str(path), epoch=1)
    before = path.read_bytes()

    def half_written(fileobj, arrays):
        fileobj.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write_arrays", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_small(str(path), epoch=2)
    assert path.read_bytes() == before
    assert load_checkpoint(str(path)).epoch == 1
    assert os.listdir(tmp_path) == ["ckpt.npz"]              # no temp file left behind


def test_values_that_would_need_pickle_are_refused(tmp_path):
    class Odd(nn.Module):
        def state_dict(self):
            return {"w": {"nested": 1}}

    with pytest.raises(TypeError, match="pickle"):
        save_checkpoint(str(tmp_path / "x.npz"), Odd())
    assert not os.listdir(tmp_path)


# ----- training and exact resume -----------------------------------------------------------
def tiny_config(tmp_path, **overrides):
    values = dict(model="resnet20", data="synthetic", subset=96, batch_size=32, epochs=2,
                  lr=0.05, schedule="cosine", seed=3, quiet=True, augment=True)
    values.update(overrides)
    return TrainConfig(**values)


def test_resumed_run_equals_the_uninterrupted_one(tmp_path):
    straight = Trainer(tiny_config(tmp_path))
    full = straight.fit()
    first = tiny_config(tmp_path, save=str(tmp_path / "run.npz"), stop_after=1)
    assert len(train(first)) == 1
    np.random.seed(999)                  # a fresh process would not share NumPy's state
    resumed = Trainer(tiny_config(tmp_path, resume=str(tmp_path / "run.npz")))
    assert resumed.start_epoch == 1
    history = resumed.fit()
    keys = ("lr", "train_loss", "train_acc", "test_loss", "test_acc")
    assert [[r[k] for k in keys] for r in history] == [[r[k] for k in keys] for r in full]
    for k, v in straight.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[k], v, err_msg=k)
    for k, v in straight.optimizer.state_dict().items():
        np.testing.assert_array_equal(np.asarray(resumed.optimizer.state_dict()[k]),
                                      np.asarray(v), err_msg=k)


def test_resume_without_the_rng_states_would_differ(tmp_path):
    """The negative control: restoring weights and optimizer alone is not enough."""
    full = Trainer(tiny_config(tmp_path)).fit()
    train(tiny_config(tmp_path, save=str(tmp_path / "run.npz"), stop_after=1))
    partial = Trainer(tiny_config(tmp_path))
    ckpt = load_checkpoint(str(tmp_path / "run.npz"))
    partial.model.load_state_dict(ckpt.model)
    partial.optimizer.load_state_dict(ckpt.optimizer)
    partial.scheduler.load_state_dict(ckpt.scheduler)
    partial.start_epoch = 1
    assert partial.fit()[-1]["train_loss"] != full[-1]["train_loss"]


def test_training_learns_and_writes_metrics_and_figure(tmp_path):
    config = tiny_config(tmp_path, subset=None, epochs=3, lr=0.1,
                         metrics=str(tmp_path / "m.json"), figure=str(tmp_path / "curves.png"))
    history = train(config)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["test_acc"] > 0.6                     # chance is 0.25
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["config"]["data"] == "synthetic" and len(saved["history"]) == 3
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    train(tiny_config(tmp_path, epochs=1, metrics=str(tmp_path / "m.csv")))
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,lr,train_loss") and len(lines) == 2


def test_bad_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="schedule"):
        Trainer(tiny_config(tmp_path, schedule="linear"))
    with pytest.raises(ValueError, match="dataset"):
        Trainer(tiny_config(tmp_path, data="imagenet"))


# ----- the command line ----------------------------------------------------------------------
def test_cli_demo_runs_end_to_end_and_prints_the_probe_table(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.setdefault("NUMBA_CACHE_DIR", "/tmp/numba_cache")
    out = subprocess.run(
        [sys.executable, "-m", "tinyres", "demo", "--data", "synthetic", "--subset", "64",
         "--save", str(tmp_path / "c.npz"), "--metrics", str(tmp_path / "m.csv")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "parameters" in text and "epoch   1/1" in text
    assert "learned: test accuracy" in text and "labels" in text
    assert "|g short|" in text and "layer3.2" in text
    assert load_checkpoint(str(tmp_path / "c.npz")).epoch == 1


def test_cli_plain_model_and_resume(tmp_path, capsys):
    from tinyres.__main__ import main
    args = ["train", "--data", "synthetic", "--subset", "64", "--epochs", "2", "--quiet",
            "--shortcut", "none", "--schedule", "multistep", "--save", str(tmp_path / "c.npz")]
    assert main(args + ["--epochs", "2"]) == 0
    assert "no shortcuts" in capsys.readouterr().out
    assert main(args + ["--epochs", "3", "--resume", str(tmp_path / "c.npz")]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert load_checkpoint(str(tmp_path / "c.npz")).epoch == 3
