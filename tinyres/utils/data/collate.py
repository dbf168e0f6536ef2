"""default_collate and default_convert: a list of samples -> one batch, as torch does it.

    default_collate([(x0, 0), (x1, 1)])   # [stack([x0, x1]), tensor([0, 1])]

Dtypes are kept: a batch of float32 tensors or arrays stays float32, uint8 stays uint8,
Python floats become float64, ints int64 and bools bool. Tuples come back as lists, dicts
as dicts of batches, strings as lists of strings, exactly as in torch.
"""
import collections.abc

import numpy as np

import tinyres
from tinyres.tensor import Tensor

COLLATE_ERROR = ("default_collate: batch must contain tensors, numpy arrays, numbers, dicts "
                 "or lists; found {}")


def default_collate(batch):
    """Stack the samples of `batch` into tensors, recursing through dicts and sequences."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack(batch)
    if isinstance(elem, np.ndarray):
        _refuse_strings(elem.dtype)
        return _stack([tinyres.from_numpy(np.asarray(b)) for b in batch])
    if isinstance(elem, np.generic):
        _refuse_strings(elem.dtype)
        return tinyres.tensor(np.array(batch))
    if isinstance(elem, float):
        return tinyres.tensor(batch, dtype=np.float64)
    if isinstance(elem, int):                          # bool included: a bool tensor
        return tinyres.tensor(batch)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        return _rebuild_mapping(elem, {key: default_collate([d[key] for d in batch])
                                       for key in elem})
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):      # namedtuple
        return type(elem)(*(default_collate(samples) for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        return _collate_sequences(batch)
    raise TypeError(COLLATE_ERROR.format(type(elem)))


def _refuse_strings(dtype):
    if dtype.kind in "SaUO":
        raise TypeError(COLLATE_ERROR.format(dtype))


def _stack(tensors):
    """torch.stack's check (RuntimeError naming the sizes), then the stack itself."""
    first = tensors[0].shape
    for i, t in enumerate(tensors):
        if t.shape != first:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got "
                               f"{list(first)} at entry 0 and {list(t.shape)} at entry {i}")
    return tinyres.stack(list(tensors))


def _rebuild_mapping(elem, collated):
    try:
        return type(elem)(collated)
    except TypeError:              # a Mapping that cannot be built from a dict
        return collated


def _collate_sequences(batch):
    """Samples that are lists or tuples: collate position by position."""
    size = len(batch[0])
    if not all(len(e) == size for e in batch):
        raise RuntimeError("each element in list of batch should be of equal size")
    collated = [default_collate(samples) for samples in zip(*batch)]
    if isinstance(batch[0], tuple):
        return collated
    try:
        return type(batch[0])(collated)
    except TypeError:
        return collated


def default_convert(data):
    """One sample to tensors without batching (DataLoader with batch_size=None): NumPy
    arrays and scalars become tensors sharing memory, containers are walked, the rest
    is returned unchanged."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray):
        return data if data.dtype.kind in "SaUO" else tinyres.from_numpy(data)
    if isinstance(data, np.generic):
        return data if data.dtype.kind in "SaUO" else tinyres.from_numpy(np.array(data))
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, collections.abc.Mapping):
        return _rebuild_mapping(data, {key: default_convert(data[key]) for key in data})
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence):
        converted = [default_convert(d) for d in data]
        try:
            return type(data)(converted)
        except TypeError:
            return converted
    return data


__all__ = ["default_collate", "default_convert"]
