"""Checkpoints: one .npz holding everything a run needs to continue exactly, checksummed
and written atomically.

    save_checkpoint("run.npz", model, optimizer, scheduler,
                    rng_states={"loader": loader.state_dict(), "numpy": numpy_rng_state()},
                    epoch=3, extra={"history": history})
    ckpt = load_checkpoint("run.npz")    # raises CheckpointError on a damaged file
    model.load_state_dict(ckpt.model)

Layout of the archive (plain arrays only, so numpy.load never needs allow_pickle):

    model/<key>          the model's state_dict arrays
    optimizer/<key>      the optimizer state_dict, flattened (optim.optimizer.flatten_state_dict)
    scheduler/<key>      the scheduler's state_dict (lists as 1-d arrays), if any
    rng_states           JSON text: generator states by name (a 0-d unicode array)
    extra                JSON text: anything else (history, config)
    epoch, format        0-d arrays
    sha256               hex digest over every other entry (see payload_digest)

Two checksums guard it. The zip comment (the last bytes of the file) is
"tinyres-sha256:<hex>", the SHA-256 of every byte before the comment's length field, so
a flipped or missing byte anywhere in the file is caught before the zip is parsed; the
sha256 entry covers the arrays as parsed. Any file that fails a check, or is no
checkpoint at all (empty, text, a lone .npy, someone else's zip), raises CheckpointError
naming the file and what is wrong with it.

A save writes `.<name>.tmp-<pid>-<random>` next to the target (mode 0666 less the umask,
or the target's own mode when it exists, as open() would give), fsyncs it and renames it
over the target with os.replace, so a crash or error mid-save leaves the last good
checkpoint as it was. A process killed mid-save (kill -9) cannot remove its temporary
file; the next save to the same target removes those whose process is gone.
"""
import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
import struct
import zipfile
from dataclasses import dataclass, field

import numpy as np

from tinyres.optim.optimizer import flatten_state_dict

FORMAT = "tinyres-checkpoint-2"
SECTIONS = ("model", "optimizer", "scheduler")
META = ("sha256", "format", "epoch", "rng_states", "extra")
TRAILER_TAG = b"tinyres-sha256:"
TRAILER_LENGTH = len(TRAILER_TAG) + 64            # the tag and a hex SHA-256
END_RECORD = b"PK\x05\x06"                         # a zip's end-of-central-directory record
END_RECORD_SIZE = 22                               # without a comment
CHUNK = 1 << 20


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


# ----- arrays in -------------------------------------------------------------------------
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
            state = obj.state_dict()
            if "param_groups" in state:       # an optimizer's: torch's nested layout
                state = flatten_state_dict(state)
            for key, value in state.items():
                arrays[f"{section}/{key}"] = _as_array(f"{section}/{key}", value)
    arrays["rng_states"] = _text(rng_states or {})
    arrays["extra"] = _text(extra or {})
    arrays["epoch"] = np.array(int(epoch), dtype=np.int64)
    arrays["format"] = np.array(FORMAT)
    arrays["sha256"] = np.array(payload_digest(arrays))
    return arrays


# ----- writing ---------------------------------------------------------------------------
def _file_digest(f, nbytes):
    """SHA-256 of the first `nbytes` bytes of the open binary file `f`."""
    digest = hashlib.sha256()
    f.seek(0)
    while nbytes > 0:
        chunk = f.read(min(CHUNK, nbytes))
        if not chunk:
            break
        digest.update(chunk)
        nbytes -= len(chunk)
    return digest.hexdigest()


def _write_arrays(fileobj, arrays):
    """Write the archive to an open binary file (a seam tests can break)."""
    np.savez(fileobj, **arrays)


def write_archive(fileobj, arrays):
    """The .npz of `arrays` with the checksum comment, into a file open for reading and
    writing ('w+b'). save_checkpoint's format, for any arrays (tests build bad ones)."""
    _write_arrays(fileobj, arrays)
    seal(fileobj)


def seal(fileobj):
    """Give the zip archive that ends the open file `fileobj` ('w+b' or 'r+b', no comment
    yet) the comment 'tinyres-sha256:<hex>', the SHA-256 of every byte before the
    comment's length field."""
    end = fileobj.seek(0, os.SEEK_END)
    fileobj.seek(end - END_RECORD_SIZE)
    record = fileobj.read(END_RECORD_SIZE)
    if record[:4] != END_RECORD or record[-2:] != b"\0\0":
        raise ValueError("the file does not end with a comment-less zip "
                         "end-of-central-directory record; cannot add the checksum")
    comment = TRAILER_TAG + _file_digest(fileobj, end - 2).encode()
    fileobj.seek(end - 2)
    fileobj.write(struct.pack("<H", len(comment)) + comment)


_TEMP = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]+$")


def _process_exists(pid):
    """Whether process `pid` runs (True when it cannot be told: its file is kept)."""
    if os.name != "posix":
        return True                   # Windows' os.kill would terminate the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True                   # someone else's process, or cannot tell: keep it
    return True


def remove_stale_temporaries(path):
    """Delete `.<name>.tmp-<pid>-...` files left next to `path` by saves whose process
    no longer exists (killed mid-save); a live process's file is its save in progress.
    The removed paths."""
    folder, name = os.path.split(os.path.abspath(path))
    removed = []
    for entry in os.listdir(folder):
        match = _TEMP.match(entry)
        if match and match["name"] == name and not _process_exists(int(match["pid"])):
            try:
                os.remove(os.path.join(folder, entry))
                removed.append(os.path.join(folder, entry))
            except FileNotFoundError:
                pass                  # another save cleaned it first
    return removed


def _open_temporary(path):
    """A new file `.<name>.tmp-<pid>-<random>` beside `path`, open 'w+b', created with
    open()'s permissions: 0666 less the umask, or the mode of the file it will replace."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                 0o666)
    try:
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
    except FileNotFoundError:
        pass
    return tmp, os.fdopen(fd, "w+b")


@contextlib.contextmanager
def atomic_write(path):
    """A new file open 'w+b' that replaces `path` only when the block ends without an
    error: written to `.<name>.tmp-<pid>-<random>` beside it, fsynced, renamed over it
    with os.replace; on any error the temporary file is removed and `path` is as it was.
    tinyres.save and tinyres.safetensors.save_file write through it too."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(path)
    tmp, f = _open_temporary(path)
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def save_checkpoint(path, model, optimizer=None, scheduler=None, rng_states=None, epoch=0,
                    extra=None):
    """Write one checksummed .npz at `path`, atomically (temp file, fsync, os.replace).
    `rng_states` and `extra` must be JSON-serialisable."""
    arrays = _payload(model, optimizer, scheduler, rng_states, epoch, extra)
    with atomic_write(path) as f:
        write_archive(f, arrays)


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


# ----- reading: the file, then the arrays, then the entries ----------------------------
def _what_it_is(head):
    """A description of a file that does not start like a zip archive."""
    if head.startswith(b"\x93NUMPY"):
        return "a single NumPy array (.npy), not a checkpoint archive"
    if head.startswith(b"\x80"):
        return "a pickle, not a checkpoint archive (checkpoints are never pickles)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"text ({head[:20]!r}...), not a checkpoint archive"
    return f"not a zip archive: it starts with {head[:8]!r}, expected b'PK\\x03\\x04'"


def _verify_file(path):
    """Check the whole file against the checksum in its zip comment."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} is not a regular file")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(64)
            if size == 0:
                raise CheckpointError(f"checkpoint {path!r} is empty (0 bytes)")
            if not head.startswith(b"PK\x03\x04"):
                raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt, or not "
                                      f"a checkpoint: it is {_what_it_is(head)}")
            f.seek(max(0, size - TRAILER_LENGTH - 2))
            tail = f.read()
            length, comment = tail[:2], tail[2:]
            if (len(tail) != TRAILER_LENGTH + 2 or not comment.startswith(TRAILER_TAG)
                    or length != struct.pack("<H", TRAILER_LENGTH)):
                raise CheckpointError(
                    f"checkpoint {path!r} is truncated or corrupt, or not written by "
                    f"tinyres.checkpoint.save_checkpoint: it does not end with the "
                    f"'tinyres-sha256:' checksum record ({size} bytes, ending {tail[-12:]!r})")
            stored = comment[len(TRAILER_TAG):].decode("ascii", "replace")
            actual = _file_digest(f, size - TRAILER_LENGTH - 2)
    except OSError as err:
        raise CheckpointError(f"checkpoint {path!r} cannot be read: {err}") from err
    if actual != stored:
        raise CheckpointError(f"checkpoint {path!r} is corrupt: the SHA-256 of its bytes is "
                              f"{actual[:16]}..., its checksum record says {stored[:16]}...")


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


def _read_member(archive, info):
    """One .npy member as an array, its header checked before anything is allocated."""
    if not info.filename.endswith(".npy"):
        raise ValueError(f"member {info.filename!r} is not a .npy array")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in _HEADER_READERS:
            raise ValueError(f"member {info.filename!r} is .npy version {version}, "
                             f"expected one of {sorted(_HEADER_READERS)}")
        shape, _, dtype = _HEADER_READERS[version](member)
        if dtype.hasobject:
            raise ValueError(f"member {info.filename!r} holds Python objects (dtype {dtype})")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if expected > info.file_size:
            raise ValueError(f"member {info.filename!r} declares {expected} bytes of data "
                             f"(shape {shape}, {dtype}) in {info.file_size} bytes")
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _read_arrays(path):
    """Every member of the verified archive, by name without '.npy'."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {info.filename[:-4]: _read_member(archive, info)
                    for info in archive.infolist()}
    except Exception as err:      # any failure to parse is a malformed file
        raise CheckpointError(f"checkpoint {path!r} is corrupt: cannot read it as an .npz "
                              f"archive ({type(err).__name__}: {err})") from err


def _check_entries(path, arrays):
    missing = [k for k in META if k not in arrays]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} is missing entries {missing}; expected a "
                              f"file written by tinyres.checkpoint.save_checkpoint")
    for key in META:
        if arrays[key].shape != ():
            raise CheckpointError(f"checkpoint {path!r}: entry {key!r} has shape "
                                  f"{arrays[key].shape}, expected a single value")
    if arrays["format"].dtype.kind != "U" or str(arrays["format"]) != FORMAT:
        raise CheckpointError(f"checkpoint {path!r} has format {str(arrays['format'])!r}, "
                              f"expected {FORMAT!r}")
    stored = str(arrays.pop("sha256"))
    actual = payload_digest(arrays)
    if stored != actual:
        raise CheckpointError(f"checkpoint {path!r} is corrupt: SHA-256 of its contents is "
                              f"{actual[:16]}..., the stored checksum says {stored[:16]}...")
    if arrays["epoch"].dtype.kind not in "iu":
        raise CheckpointError(f"checkpoint {path!r}: entry 'epoch' has dtype "
                              f"{arrays['epoch'].dtype}, expected an integer")


def _json(path, arrays, key):
    try:
        value = json.loads(str(arrays[key]))
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path!r}: entry {key!r} is not valid JSON "
                              f"({err})") from err
    if not isinstance(value, dict):
        raise CheckpointError(f"checkpoint {path!r}: entry {key!r} holds a "
                              f"{type(value).__name__}, expected a JSON object")
    return value


def _section(arrays, name):
    prefix = name + "/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def load_checkpoint(path):
    """Read and verify a checkpoint; a Checkpoint of state dicts (NumPy arrays).
    Raises CheckpointError, naming the file and the fault, for anything else."""
    path = os.fspath(path)
    _verify_file(path)
    arrays = _read_arrays(path)
    _check_entries(path, arrays)
    model = _section(arrays, "model")
    if not model:
        raise CheckpointError(f"checkpoint {path!r} holds no model/ entries")
    return Checkpoint(epoch=int(arrays["epoch"]), model=model,
                      optimizer=_section(arrays, "optimizer"),
                      scheduler=_section(arrays, "scheduler"),
                      rng_states=_json(path, arrays, "rng_states"),
                      extra=_json(path, arrays, "extra"))


__all__ = ["Checkpoint", "CheckpointError", "atomic_write", "load_checkpoint", "numpy_rng_state",
           "payload_digest", "remove_stale_temporaries", "save_checkpoint",
           "seal", "set_numpy_rng_state", "write_archive"]
