"""Checkpoint files: they round-trip; any damaged or foreign file (a flipped byte
anywhere, truncated, empty, text, a lone .npy, someone else's zip, missing entries, stale
checksums) raises CheckpointError naming the file; a save gets open()'s permissions, is
atomic, and a save killed with SIGKILL leaves the last good checkpoint, whose litter the
next save removes."""
import json
import os
import pickle
import signal
import stat
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import tinyres
from tinyres import checkpoint, nn
from tinyres.checkpoint import (CheckpointError, load_checkpoint, payload_digest,
                                save_checkpoint, seal, write_archive)
from tinyres.optim import SGD
from tinyres.optim.optimizer import flatten_state_dict
from tinyres.optim.lr_scheduler import MultiStepLR

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


def save_tiny(path):
    """The smallest checkpoint with every kind of entry (about 2 kB): a 2x2 Linear."""
    tinyres.manual_seed(0)
    save_checkpoint(path, nn.Linear(2, 2), rng_states={"a": 1}, epoch=3, extra={"b": [2]})


def same_content(a, b):
    return (a.epoch == b.epoch and a.extra == b.extra and a.rng_states == b.rng_states
            and a.model.keys() == b.model.keys()
            and all(np.array_equal(a.model[k], b.model[k]) and a.model[k].dtype ==
                    b.model[k].dtype for k in a.model))


def flipped(raw, at):
    """`raw` with one bit of byte `at` flipped (a different bit from byte to byte)."""
    out = bytearray(raw)
    out[at] ^= 1 << (at % 8)
    return bytes(out)


def write_arrays(path, arrays):
    """A file in save_checkpoint's format (checksum comment included) holding `arrays`."""
    with open(path, "w+b") as f:
        write_archive(f, arrays)


def read_arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


# ----- round trip ----------------------------------------------------------------------------
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
    for k, v in flatten_state_dict(opt.state_dict()).items():
        np.testing.assert_array_equal(
            np.asarray(flatten_state_dict(fresh_opt.state_dict())[k]), np.asarray(v))
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


# ----- damaged files -----------------------------------------------------------------------
def test_a_flipped_bit_in_any_byte_is_caught(tmp_path):
    """Every byte of the file, one at a time: zip headers, array headers, data, the
    central directory and the checksum comment itself."""
    path = tmp_path / "ckpt.npz"
    save_tiny(str(path))
    raw = path.read_bytes()
    load_checkpoint(str(path))
    escaped = []
    for at in range(len(raw)):
        path.write_bytes(flipped(raw, at))
        try:
            load_checkpoint(str(path))
            escaped.append(at)
        except CheckpointError as err:
            assert repr(str(path)) in str(err)
    assert not escaped, f"flips at bytes {escaped} of {len(raw)} loaded without an error"


def test_damage_inside_a_resealed_zip_never_loads_wrong_values(tmp_path):
    """The zip parser behind the file checksum: flip a byte of the archive, then give it
    a valid checksum comment (as a tool that rewrites the file would). Each one raises
    CheckpointError (never zipfile's NotImplementedError, its 'encrypted' RuntimeError or
    numpy's errors) or, where only zip metadata such as a timestamp changed, loads the
    very same values."""
    path = tmp_path / "ckpt.npz"
    save_tiny(str(path))
    original = load_checkpoint(str(path))
    raw = path.read_bytes()
    archive = unsealed(raw)
    directory = struct.unpack("<I", archive[-6:-2])[0]        # where the central one starts
    positions = sorted(set(range(0, 64)) | set(range(directory, len(archive)))
                       | set(range(64, directory, 3)))       # every header byte, some data
    caught = 0
    for at in positions:
        try:
            resealed(path, flipped(archive, at))
        except ValueError:              # the end-of-directory record itself was hit
            continue
        try:
            loaded = load_checkpoint(str(path))
        except CheckpointError as err:
            assert repr(str(path)) in str(err)
            caught += 1
            continue
        assert same_content(loaded, original), f"byte {at}: loaded different values"
    assert caught > len(positions) // 2


def unsealed(raw):
    """A checkpoint's bytes without the checksum comment (a plain comment-less zip)."""
    return raw[:-(checkpoint.TRAILER_LENGTH + 2)] + b"\0\0"


def resealed(path, archive):
    with open(path, "w+b") as f:
        f.write(archive)
        seal(f)


@pytest.mark.parametrize("offset, value, zip_error", [
    (8, 0x01, "encrypted"),              # flag bit 0: zipfile raises RuntimeError
    (10, 99, "compression method"),      # zipfile raises NotImplementedError
    (28, 0xFF, "name length"),           # a file name that runs into the next header
])
def test_zip_errors_become_checkpoint_errors(tmp_path, offset, value, zip_error):
    """A central-directory entry of a well-sealed file with a bad field: the errors
    zipfile gives (RuntimeError, NotImplementedError, BadZipFile...) arrive as
    CheckpointError naming the file."""
    path = tmp_path / "ckpt.npz"
    save_tiny(str(path))
    archive = bytearray(unsealed(path.read_bytes()))
    entry = archive.index(b"PK\x01\x02")
    archive[entry + offset] = value
    resealed(path, bytes(archive))
    with pytest.raises(CheckpointError, match="cannot read it as an .npz") as err:
        load_checkpoint(str(path))
    assert repr(str(path)) in str(err.value)


@pytest.mark.parametrize("keep", [0.5, 0.95, 0.999])
def test_truncated_file_is_detected(tmp_path, keep):
    path = tmp_path / "ckpt.npz"
    save_small(str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        load_checkpoint(str(path))
    assert repr(str(path)) in str(err.value)


def _zip_of_text(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not a checkpoint")


FOREIGN = {
    "empty": (lambda p: open(p, "wb").close(), "is empty"),
    "npy": (lambda p: np.save(open(p, "wb"), np.zeros(3)), r"single NumPy array \(\.npy\)"),
    "text": (lambda p: open(p, "w").write("epoch,lr\n1,0.1\n"), "text"),
    "pickle": (lambda p: pickle.dump({"w": [1.0]}, open(p, "wb")), "pickle"),
    "zip of text": (_zip_of_text, "not written by tinyres.checkpoint.save_checkpoint"),
    "np.savez": (lambda p: np.savez(open(p, "wb"), w=np.zeros(3)),
                 "not written by tinyres.checkpoint.save_checkpoint"),
    "binary": (lambda p: open(p, "wb").write(bytes(range(256))), "not a zip archive"),
    "folder": (os.mkdir, "not a regular file"),
    "missing": (lambda p: None, "does not exist"),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_foreign_files_are_refused_with_what_they_are(tmp_path, kind):
    make, message = FOREIGN[kind]
    path = str(tmp_path / "ckpt.npz")
    make(path)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    assert repr(path) in str(err.value)


def _resigned(arrays):
    """The arrays with a sha256 entry that matches them again."""
    arrays = {k: v for k, v in arrays.items() if k != "sha256"}
    arrays["sha256"] = np.array(payload_digest(arrays))
    return arrays


def _changed(arrays, **entries):
    return {**arrays, **{k.replace("__", "/"): v for k, v in entries.items()}}


def _without(arrays, *keys):
    return {k: v for k, v in arrays.items() if k not in keys}


BAD_ENTRIES = {
    "stale checksum": (lambda a: _changed(a, model__weight=a["model/weight"] + 1), "SHA-256"),
    "no checksum": (lambda a: _without(a, "sha256"), r"missing entries \['sha256'\]"),
    "no format": (lambda a: _resigned(_without(a, "format")), r"missing entries \['format'\]"),
    "other format": (lambda a: _resigned(_changed(a, format=np.array("other-1"))),
                     "has format 'other-1'"),
    "no model": (lambda a: _resigned(_without(a, "model/weight", "model/bias")),
                 "no model/ entries"),
    "bad json": (lambda a: _resigned(_changed(a, extra=np.array("{oops"))), "not valid JSON"),
    "json list": (lambda a: _resigned(_changed(a, rng_states=np.array("[1]"))),
                  "expected a JSON object"),
    "float epoch": (lambda a: _resigned(_changed(a, epoch=np.array(2.5))), "integer"),
    "array epoch": (lambda a: _resigned(_changed(a, epoch=np.arange(2))), "single value"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ENTRIES))
def test_missing_or_wrong_entries_in_a_well_formed_file(tmp_path, kind):
    """Files with a valid file checksum whose entries are wrong: stale or absent sha256,
    no format, no model, broken JSON, an epoch that is not one integer."""
    path = str(tmp_path / "ckpt.npz")
    save_tiny(path)
    change, message = BAD_ENTRIES[kind]
    write_arrays(path, change(read_arrays(path)))
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    assert repr(path) in str(err.value)


def test_rewriting_the_valid_entries_loads_again(tmp_path):
    """The control for the test above: the same path through read and write, unchanged,
    loads the same values."""
    path = str(tmp_path / "ckpt.npz")
    save_tiny(path)
    original = load_checkpoint(path)
    write_arrays(path, read_arrays(path))
    assert same_content(load_checkpoint(path), original)


# ----- saving ------------------------------------------------------------------------------
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


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_file_has_the_permissions_open_gives(tmp_path, umask):
    """0666 less the umask for a new file (as open(path, 'wb') gives), and an existing
    file keeps its mode when a save replaces it (as open() on it would)."""
    previous = os.umask(umask)
    try:
        with open(tmp_path / "by_open.bin", "wb"):
            pass
        save_tiny(str(tmp_path / "new.npz"))
        assert _mode(tmp_path / "new.npz") == _mode(tmp_path / "by_open.bin") == 0o666 & ~umask
        os.chmod(tmp_path / "new.npz", 0o640)
        save_tiny(str(tmp_path / "new.npz"))
        assert _mode(tmp_path / "new.npz") == 0o640
    finally:
        os.umask(previous)


def test_saved_file_has_the_permissions_torch_save_gives(tmp_path):
    torch = pytest.importorskip("torch")
    previous = os.umask(0o027)
    try:
        torch.save({"w": torch.zeros(2)}, str(tmp_path / "torch.pt"))
        save_tiny(str(tmp_path / "ours.npz"))
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "ours.npz") == _mode(tmp_path / "torch.pt") == 0o640


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_next_save_removes_temporaries_of_dead_processes_only(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    names = {"stale": f".ckpt.npz.tmp-{dead}-0a1b2c3d",
             "in progress": f".ckpt.npz.tmp-{alive}-0a1b2c3d",
             "other target": f".other.npz.tmp-{dead}-0a1b2c3d",
             "user file": "ckpt.npz.tmp-notes"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"PK\x03\x04 partial")
    save_tiny(str(tmp_path / "ckpt.npz"))
    left = set(os.listdir(tmp_path))
    assert names["stale"] not in left
    assert {names["in progress"], names["other target"], names["user file"],
            "ckpt.npz"} == left


CHILD = """
import sys
import numpy as np
from tinyres.checkpoint import save_checkpoint

class State:
    def __init__(self, n):
        self.w = np.arange(n, dtype=np.float64)
    def state_dict(self):
        return {"w": self.w}

save_checkpoint(sys.argv[1], State(10), epoch=1)
print("saved", flush=True)
big, epoch = State(4 << 20), 2                      # 32 MB: each save takes a while
while True:
    save_checkpoint(sys.argv[1], big, epoch=epoch)
    epoch += 1
"""


def _kill_during_a_save(path, timeout=60):
    """Start CHILD, wait for its first save, SIGKILL it while a temporary file of a
    later save exists; the names of the files left. None if the kill missed the save."""
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR",
                                                          "/tmp/numba_cache"))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "saved"
        marker = f".{path.name}.tmp-{child.pid}-"
        deadline = time.monotonic() + timeout
        while not any(n.startswith(marker) for n in os.listdir(path.parent)):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    left = os.listdir(path.parent)
    return left if any(n.startswith(marker) for n in left) else None


def test_kill_9_during_a_save_keeps_the_old_checkpoint_and_the_next_save_cleans_up(
        tmp_path):
    path = tmp_path / "ckpt.npz"
    for _ in range(3):                # the kill can land just after a rename: try again
        left = _kill_during_a_save(path)
        if left is not None:
            break
    assert left is not None, "could not kill the child in the middle of a save"
    assert len(left) == 2 and "ckpt.npz" in left          # the litter is there
    survivor = load_checkpoint(str(path))                  # and the last good one loads
    assert survivor.epoch >= 1 and survivor.model["w"].shape in ((10,), (4 << 20,))
    np.testing.assert_array_equal(survivor.model["w"], np.arange(len(survivor.model["w"])))
    save_tiny(str(path))
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert load_checkpoint(str(path)).epoch == 3
