"""Checkpoints: one .npz holding everything a run needs to continue exactly, checksummed
and written atomically.

    save_checkpoint("run.npz", model, optimizer, scheduler,
                    rng_states={"loader": loader.state_dict(), "numpy": numpy_rng_state()},
                    epoch=3, extra={"history": history})
    ckpt = load_checkpoint("run.npz")    # raises CheckpointError on a damaged file
    model.load_state_dict(ckpt.model)

Layout of the archive (plain arrays only, so numpy.load never needs allow_pickle):

    model/<key>          the model's state_dict arrays
    optimizer/<key>      the optimizer's flat state_dict (numbers as 0-d arrays)
    scheduler/<key>      the scheduler's state_dict (lists as 1-d arrays), if any
    rng_states           JSON text: generator states by name (a 0-d unicode array)
    extra                JSON text: anything else (history, config)
    epoch, format        0-d arrays
    sha256               hex digest over every other entry (see payload_digest)

A save writes to a temporary file in the same folder, fsyncs it and renames it over the
target with os.replace, so a crash or error mid-save leaves the last good checkpoint as
it was.
"""
import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field

import numpy as np

FORMAT = "tinyres-checkpoint-1"
SECTIONS = ("model", "optimizer", "scheduler")


class CheckpointError(Exception):
    """A checkpoint file that is missing, truncated, corrupt or of the wrong layout."""


@dataclass
class Checkpoint:
    """What load_checkpoint returns: state dicts ready for load_state_dict()."""
    epoch: int
    model: dict
    optimizer: dict = field(default_factory=dict)
    scheduler: dict = field(default_factory=dict)
    rng_states: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


# ----- the numpy global generator as JSON ---------------------------------------------
def numpy_rng_state():
    """np.random's global state (used by init and dropout) as a JSON-friendly dict."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"name": name, "keys": keys.tolist(), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}


def set_numpy_rng_state(state):
    """Restore what numpy_rng_state() returned."""
    np.random.set_state((state["name"], np.array(state["keys"], dtype=np.uint32),
                         state["pos"], state["has_gauss"], state["cached_gaussian"]))


# ----- arrays in, arrays out -----------------------------------------------------------
def _as_array(key, value):
    """A plain (non-object) NumPy array for one entry; refuses what would need pickle."""
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"checkpoint entry {key!r} is not a number, string or array "
                        f"({type(value).__name__}); it cannot be saved without pickle")
    return array


def _text(value):
    return np.array(json.dumps(value, sort_keys=True))


def payload_digest(arrays):
    """SHA-256 over the entries in sorted key order: each key, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        for part in (key, array.dtype.str, repr(array.shape)):
            digest.update(part.encode() + b"\0")
        digest.update(array.tobytes())
    return digest.hexdigest()


def _payload(model, optimizer, scheduler, rng_states, epoch, extra):
    arrays = {}
    for section, obj in zip(SECTIONS, (model, optimizer, scheduler)):
        if obj is not None:
            for key, value in obj.state_dict().items():
                arrays[f"{section}/{key}"] = _as_array(f"{section}/{key}", value)
    arrays["rng_states"] = _text(rng_states or {})
    arrays["extra"] = _text(extra or {})
    arrays["epoch"] = np.array(int(epoch), dtype=np.int64)
    arrays["format"] = np.array(FORMAT)
    return arrays


def _write_arrays(fileobj, arrays):
    """Write the archive to an open binary file (a seam tests can break)."""
    np.savez(fileobj, **arrays)


def save_checkpoint(path, model, optimizer=None, scheduler=None, rng_states=None, epoch=0,
                    extra=None):
    """Write one checksummed .npz at `path`, atomically (temp file, fsync, os.replace).
    `rng_states` and `extra` must be JSON-serialisable."""
    arrays = _payload(model, optimizer, scheduler, rng_states, epoch, extra)
    arrays["sha256"] = np.array(payload_digest(arrays))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write_arrays(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make the rename itself durable, where the OS allows opening a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----- loading -------------------------------------------------------------------------
def _read_arrays(path):
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as err:
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt: cannot read it "
                              f"as an .npz archive ({type(err).__name__}: {err})") from err


def _check(path, arrays):
    missing = [k for k in ("sha256", "format", "epoch", "rng_states", "extra")
               if k not in arrays]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} is missing entries {missing}; expected a "
                              f"file written by tinyres.checkpoint.save_checkpoint")
    if str(arrays["format"]) != FORMAT:
        raise CheckpointError(f"checkpoint {path!r} has format {str(arrays['format'])!r}, "
                              f"expected {FORMAT!r}")
    stored = str(arrays.pop("sha256"))
    actual = payload_digest(arrays)
    if stored != actual:
        raise CheckpointError(f"checkpoint {path!r} is corrupt: SHA-256 of its contents is "
                              f"{actual[:16]}..., the stored checksum says {stored[:16]}...")


def _section(arrays, name):
    prefix = name + "/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def load_checkpoint(path):
    """Read and verify a checkpoint; a Checkpoint of state dicts (NumPy arrays)."""
    path = os.fspath(path)
    arrays = _read_arrays(path)
    _check(path, arrays)
    model = _section(arrays, "model")
    if not model:
        raise CheckpointError(f"checkpoint {path!r} holds no model/ entries")
    return Checkpoint(epoch=int(arrays["epoch"]), model=model,
                      optimizer=_section(arrays, "optimizer"),
                      scheduler=_section(arrays, "scheduler"),
                      rng_states=json.loads(str(arrays["rng_states"])),
                      extra=json.loads(str(arrays["extra"])))


__all__ = ["Checkpoint", "CheckpointError", "load_checkpoint", "numpy_rng_state",
           "payload_digest", "save_checkpoint", "set_numpy_rng_state"]
