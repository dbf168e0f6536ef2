"""Training and the command line: a resumed run is bit-for-bit the uninterrupted one, a
resume with more epochs continues the cosine downwards, a resume from another
architecture or configuration is refused with every difference, the same seed gives the
same run bit for bit (in this process and in a fresh one), every bad option is a usage
error before any work, and `python -m tinyres` trains end to end and prints the probe
table. (The checkpoint files themselves: test_checkpoint.py.)"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tinyres
from tinyres import nn
from tinyres.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tinyres.optim import SGD
from tinyres.optim.optimizer import flatten_state_dict
from tinyres.optim.lr_scheduler import CosineAnnealingLR, ExtendableCosineLR
from tinyres.train import ConfigError, Trainer, TrainConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env():
    env = dict(os.environ, MPLBACKEND="Agg")
    env.setdefault("NUMBA_CACHE_DIR", "/tmp/numba_cache")
    return env


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
    resumed_optimizer = flatten_state_dict(resumed.optimizer.state_dict())
    for k, v in flatten_state_dict(straight.optimizer.state_dict()).items():
        np.testing.assert_array_equal(np.asarray(resumed_optimizer[k]), np.asarray(v), err_msg=k)


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


# ----- a resume with another length, or from another run -----------------------------------
def cosine_rates(scheduler_class, T_max, steps, extend_at=None, new_T_max=None):
    """The rate before each of `steps` scheduler steps and after the last one."""
    optimizer = SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    scheduler = scheduler_class(optimizer, T_max=T_max, eta_min=0.001)
    rates = [optimizer.param_groups[0]["lr"]]
    for step in range(steps):
        if step == extend_at:
            scheduler.extend(new_T_max)
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_extendable_cosine_is_the_cosine_until_extended():
    ours = cosine_rates(ExtendableCosineLR, 5, 12)
    assert ours == cosine_rates(CosineAnnealingLR, 5, 12)          # bit for bit
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5, eta_min=0.001)
    theirs = [optimizer.param_groups[0]["lr"]]
    for _ in range(12):
        optimizer.step()
        scheduler.step()
        theirs.append(optimizer.param_groups[0]["lr"])
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("T_max, at, new_T_max", [(4, 2, 9), (10, 7, 12), (6, 3, 4), (3, 3, 5)])
def test_an_extended_cosine_keeps_decreasing_to_the_floor_at_the_new_end(T_max, at, new_T_max):
    rates = cosine_rates(ExtendableCosineLR, T_max, new_T_max, at, new_T_max)
    assert rates[:at + 1] == cosine_rates(ExtendableCosineLR, T_max, at)   # no jump at `at`
    pairs = list(zip(rates, rates[1:]))
    assert all(a >= b for a, b in pairs), rates                           # never climbs
    assert all(a > b for a, b in pairs if a > 0.001 + 1e-15), rates       # falls to the
    assert rates[-1] == pytest.approx(0.001, abs=1e-15)                   # floor at the end
    old = cosine_rates(CosineAnnealingLR, T_max, new_T_max)
    if new_T_max > T_max:                       # what the unextended cosine does instead
        assert old[T_max] == pytest.approx(0.001) and old[-1] > old[T_max]


def test_resume_with_more_epochs_continues_the_cosine_downwards(tmp_path):
    save = str(tmp_path / "run.npz")
    first = train(tiny_config(tmp_path, epochs=3, stop_after=2, save=save))
    longer = tiny_config(tmp_path, epochs=5, resume=save, save=str(tmp_path / "longer.npz"),
                         stop_after=4)
    assert len(Trainer(longer).fit()) == 4
    again = Trainer(tiny_config(tmp_path, epochs=5, resume=str(tmp_path / "longer.npz")))
    history = again.fit()                  # the restored rows and the fifth epoch
    rates = [row["lr"] for row in history]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5]
    assert rates[:2] == [row["lr"] for row in first]
    assert all(a > b for a, b in zip(rates, rates[1:])), rates
    assert again.scheduler.get_last_lr() == [pytest.approx(0.0, abs=1e-15)]  # at epoch 5
    # the stretched cosine is one curve: a single resume to 5 epochs gives the same rates
    once = Trainer(tiny_config(tmp_path, epochs=5, resume=save, stop_after=4)).fit()
    assert [row["lr"] for row in once] == rates[:4]


def test_resume_refuses_another_architecture_or_configuration(tmp_path):
    save = str(tmp_path / "run.npz")
    train(tiny_config(tmp_path, epochs=3, stop_after=2, save=save))
    assert Trainer(tiny_config(tmp_path, epochs=3, resume=save)).start_epoch == 2
    cases = [({"shortcut": None}, ["shortcut"]),                       # the plain twin
             ({"shortcut_scale": 0.5}, ["shortcut_scale"]),
             ({"model": "resnet32", "lr": 0.1, "batch_size": 16, "seed": 4},
              ["model", "lr", "batch_size", "seed"]),
             ({"augment": False, "subset": 64, "schedule": "multistep"},
              ["augment", "subset", "schedule"])]
    for overrides, differing in cases:
        with pytest.raises(ConfigError) as err:
            Trainer(tiny_config(tmp_path, epochs=3, resume=save, **overrides))
        message = str(err.value)
        assert err.value.field == "resume" and repr(save) in message
        listed = [part.split(":")[0].strip() for part in message.split(": ", 2)[2].split("; ")]
        assert sorted(listed) == sorted(differing), message
    with pytest.raises(ConfigError, match="fewer than the 2 epochs") as err:
        Trainer(tiny_config(tmp_path, epochs=1, resume=save))
    assert err.value.field == "epochs"
    done = str(tmp_path / "done.npz")                    # a cosine run that has finished
    train(tiny_config(tmp_path, epochs=3, resume=save, save=done))
    with pytest.raises(ConfigError, match="finished its cosine schedule") as err:
        Trainer(tiny_config(tmp_path, epochs=6, resume=done))
    assert err.value.field == "epochs"


def test_resume_refuses_a_checkpoint_that_is_not_a_training_run(tmp_path):
    save = str(tmp_path / "weights.npz")
    save_checkpoint(save, tinyres.models.resnet20(num_classes=4), epoch=1)
    with pytest.raises(CheckpointError, match="cannot resume a run: it holds no optimizer, "
                                              "scheduler, config, generators"):
        Trainer(tiny_config(tmp_path, resume=save))


# ----- determinism -------------------------------------------------------------------------
def run_state(trainer):
    """Every parameter, buffer and optimizer entry of a trained Trainer, as arrays."""
    state = {f"param/{k}": p.numpy() for k, p in trainer.model.named_parameters()}
    state.update({f"buffer/{k}": np.asarray(b.numpy() if hasattr(b, "numpy") else b)
                  for k, b in trainer.model.named_buffers()})
    state.update({f"optimizer/{k}": np.asarray(v)
                  for k, v in flatten_state_dict(trainer.optimizer.state_dict()).items()})
    return state


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


CHILD_TRAIN = """
import json, sys
import numpy as np
from tinyres.train import TrainConfig, Trainer
trainer = Trainer(TrainConfig(**json.loads(sys.argv[1])))
trainer.fit()
state = {f"param/{k}": p.numpy() for k, p in trainer.model.named_parameters()}
state.update({f"buffer/{k}": b.numpy() for k, b in trainer.model.named_buffers()})
np.savez(sys.argv[2], **state)
"""


def test_the_same_seed_gives_the_same_run_bit_for_bit(tmp_path):
    config = tiny_config(tmp_path, epochs=2)
    first = Trainer(config)
    first.fit()
    np.random.seed(12345)                     # whatever the global generator holds now
    second = Trainer(config)
    second.fit()
    assert_same_state(run_state(first), run_state(second))
    assert any(k.startswith("buffer/") and "running_var" in k for k in run_state(first))
    other = Trainer(tiny_config(tmp_path, epochs=2, seed=4))       # the negative control
    other.fit()
    assert not all(np.array_equal(v, run_state(other)[k]) for k, v in run_state(first).items())
    from dataclasses import asdict
    out = subprocess.run([sys.executable, "-c", CHILD_TRAIN, json.dumps(asdict(config)),
                          str(tmp_path / "child.npz")], cwd=ROOT, env=child_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    with np.load(tmp_path / "child.npz") as child:
        fresh = {k: child[k] for k in child.files}
    mine = {k: v for k, v in run_state(first).items() if not k.startswith("optimizer/")}
    assert_same_state(mine, fresh)


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
    with pytest.raises(ValueError, match="data must be one of"):
        Trainer(tiny_config(tmp_path, data="imagenet"))


# ----- the command line ----------------------------------------------------------------------
def test_cli_demo_runs_end_to_end_and_prints_the_probe_table(tmp_path):
    env = child_env()
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
    before = (tmp_path / "c.npz").read_bytes()
    assert main(args + ["--epochs", "3", "--resume", str(tmp_path / "c.npz")]) == 0
    assert "nothing to train" in capsys.readouterr().out          # a no-op that says so
    assert (tmp_path / "c.npz").read_bytes() == before


BAD_OPTIONS = [
    (["--epochs", "0"], "--epochs"), (["--epochs", "-1"], "--epochs"),
    (["--subset", "0"], "--subset"), (["--subset", "-5"], "--subset"),
    (["--subset", "100000"], "--subset"), (["--batch-size", "0"], "--batch-size"),
    (["--upsample", "0"], "--upsample"), (["--lr", "-0.1"], "--lr"), (["--lr", "nan"], "--lr"),
    (["--momentum", "-1"], "--momentum"), (["--weight-decay", "-1e-4"], "--weight-decay"),
    (["--seed", "-1"], "--seed"), (["--seed", str(2 ** 32)], "--seed"),
    (["--shortcut-scale", "inf"], "--shortcut-scale"), (["--device", "tpu"], "--device"),
    (["--model", "vgg16"], "--model"), (["--data", "cifar10"], "--data-root"),
    (["--data", "cifar10", "--data-root", "{tmp}"], "--data-root"),
    (["--figure", "{tmp}/curves.xyz"], "--figure"), (["--figure", "{tmp}/curves"], "--figure"),
    (["--figure", "{file}/curves.png"], "--figure"), (["--metrics", "{tmp}/m.txt"], "--metrics"),
    (["--metrics", "{file}/m.json"], "--metrics"), (["--metrics", "{tmp}"], "--metrics"),
    (["--save", "{file}/sub/c.npz"], "--save"), (["--save", "{tmp}"], "--save"),
    (["--resume", "{tmp}/none.npz"], "--resume"), (["--resume", "{file}"], "--resume"),
]


@pytest.mark.parametrize("command", ["train", "demo"])
@pytest.mark.parametrize("options, option", BAD_OPTIONS)
def test_cli_refuses_a_bad_option_before_any_work(tmp_path, monkeypatch, capsys, command,
                                                  options, option):
    from tinyres.__main__ import main
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setattr(Trainer, "fit", lambda self, log=print: pytest.fail("training ran"))
    options = [o.format(tmp=tmp_path, file=tmp_path / "a_file") for o in options]
    with pytest.raises(SystemExit) as exit_:
        main([command, "--data", "synthetic", "--quiet"] + options)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}: " in err and "usage: python -m tinyres" in err, err


@pytest.mark.parametrize("options, option", [(["--seed", "-1"], "--seed"),
                                             (["--seed", str(2 ** 31)], "--seed"),
                                             (["--out", "{file}/figures"], "--out")])
def test_cli_experiment_refuses_a_bad_option_before_any_work(tmp_path, monkeypatch, capsys,
                                                             options, option):
    import tinyres.experiments
    from tinyres.__main__ import main
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setattr(tinyres.experiments, "run", lambda *a, **k: pytest.fail("it ran"))
    options = [o.format(file=tmp_path / "a_file") for o in options]
    with pytest.raises(SystemExit) as exit_:
        main(["experiment", "lesion", "--quick"] + options)
    assert exit_.value.code == 2 and f"error: argument {option}: " in capsys.readouterr().err


def test_cli_accepts_the_edges_of_each_range(tmp_path, monkeypatch):
    """The control for the refusals above: the smallest valid values get to training."""
    from tinyres.__main__ import main
    ran = []
    monkeypatch.setattr(Trainer, "fit", lambda self, log=print: ran.append(self.config))
    monkeypatch.setattr("tinyres.__main__.report", lambda trainer: None)
    assert main(["train", "--data", "synthetic", "--quiet", "--epochs", "1", "--subset", "1",
                 "--batch-size", "1", "--upsample", "1", "--lr", "0", "--momentum", "0",
                 "--weight-decay", "0", "--seed", str(2 ** 32 - 1), "--figure",
                 str(tmp_path / "new" / "c.SVG"), "--metrics", str(tmp_path / "m.CSV"),
                 "--save", str(tmp_path / "new" / "c.npz")]) == 0
    assert ran and ran[0].subset == 1 and ran[0].seed == 2 ** 32 - 1
    assert not (tmp_path / "new").exists()                   # checking created nothing


def test_every_cli_option_has_help_text():
    from tinyres.__main__ import build_parser
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}"
               for name, sub in commands.items() for action in sub._actions
               if not (action.help or "").strip()]
    assert len(commands) >= 3 and not missing, missing


def test_train_tunes_the_process_unless_asked_not_to(capsys):
    from tinyres.__main__ import main
    args = ["train", "--data", "synthetic", "--subset", "32", "--epochs", "1", "--quiet"]
    assert main(args + ["--no-tune"]) == 0
    assert "process settings" not in capsys.readouterr().out
    assert main(args) == 0
    line = next(line for line in capsys.readouterr().out.splitlines()
                if line.startswith("process settings"))
    assert "glibc malloc" in line and "Numba thread pool" in line and "OpenBLAS" in line


def test_the_first_run_says_it_compiles_and_where_the_cache_is(tmp_path, capsys, monkeypatch):
    from tinyres.__main__ import announce_compilation
    import tinyres.nn.functional as F
    from tinyres.kernels import conv_plan
    from tinyres.models import resnet20
    from tinyres.train_config import TrainConfig
    tinyres.manual_seed(0)                     # every cached kernel runs once here
    model = resnet20()
    F.cross_entropy(model(tinyres.randn(2, 3, 32, 32)), tinyres.tensor([0, 1])).backward()
    warm, folder = tinyres.runtime.compiled_kernel_cache()
    if conv_plan.scipy_blas() is not None:     # else the threaded-GEMM kernels never run
        assert warm and os.path.isdir(folder)
        announce_compilation(TrainConfig())
        assert "compiling" not in capsys.readouterr().out
    monkeypatch.setattr(tinyres.runtime, "compiled_kernel_cache", lambda: (False, "/some/cache"))
    announce_compilation(TrainConfig())
    assert "compiling the CPU kernels, once" in capsys.readouterr().out
    code = "import tinyres; print(tinyres.runtime.compiled_kernel_cache())"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("(False, ") and str(tmp_path) in out
