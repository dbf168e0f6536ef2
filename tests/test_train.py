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
