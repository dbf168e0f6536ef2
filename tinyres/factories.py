"""Tensor factories: tensor, from_numpy, zeros, ones, full, rand, randn, arange, empty, eye,
linspace, logspace, randint, randperm, normal, the *_like forms and as_tensor, with torch's
signatures and default dtypes (the default float for float factories, int64 for integer
ones, and for tensor() the dtype its data implies).

Random draws come from NumPy's global generator, which tinyres.manual_seed seeds.
"""
import numpy as np

from tinyres import backend
from tinyres.functional import math as fmath
from tinyres.functional.shape import shape_arg
from tinyres.tensor import Tensor, _as_dtype, get_default_dtype



# ----- making tensors ------------------------------------------------------------------
def _default_dtype_for(array_like):
    """torch's rule: an array keeps its dtype (None: nothing to impose). In a (nested)
    list each element stands for a dtype: a Python float for the default float32, an int
    for int64, a bool for bool, a Tensor or NumPy scalar for its own; they promote as
    torch.promote_types does ([tensor(1), 2.5] is float32). An empty list is float32."""
    if hasattr(array_like, "dtype"):
        return None
    dtypes = list(_element_dtypes(array_like))
    if not dtypes:
        return get_default_dtype()
    result = dtypes[0]
    for dtype in dtypes[1:]:
        result = fmath.promote_types(result, dtype)
    return result


def _element_dtypes(data):
    """The dtype each leaf of a nested list stands for (see _default_dtype_for)."""
    if isinstance(data, (list, tuple, range)):
        for item in data:
            yield from _element_dtypes(item)
    elif isinstance(data, (Tensor, np.generic, np.ndarray)):
        yield np.dtype(data.dtype)
    elif isinstance(data, (bool, int, float)):
        yield np.dtype(fmath.scalar_dtype(data))
    else:
        raise TypeError(f"tensor: cannot make a tensor of a {type(data).__name__}")


def _plain(data):
    """A nested list with every Tensor inside replaced by its value; a Tensor in a list
    must hold one element, as in torch.tensor([tensor(1.), tensor(2.)])."""
    if isinstance(data, (list, tuple, range)):
        return [_plain(item) for item in data]
    if isinstance(data, Tensor):
        if data.numel() != 1:
            raise ValueError(f"tensor: only one-element tensors can be elements of a list, "
                             f"got one of shape {data.shape}")
        return data.numpy().reshape(())
    return data


def tensor(data, dtype=None, requires_grad=False, device=None):
    """A new leaf tensor holding a copy of `data` (nested lists, scalars, arrays, and
    lists of one-element tensors), on `device` (the CPU by default)."""
    device = backend.resolve_device(device)
    if isinstance(data, Tensor):
        data = data.array
    dtype = _as_dtype(dtype) or _default_dtype_for(data)
    if not hasattr(data, "dtype"):
        data = np.array(_plain(data), dtype=dtype)
    data = backend.to_device(data, device)
    array = backend.new_array(device, lambda xp: xp.array(data, dtype=dtype, copy=True))
    return Tensor(array, requires_grad=requires_grad)


def from_numpy(array):
    """A tensor sharing memory with a NumPy array (dtype kept)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


def _filled(fill, shape, dtype, requires_grad, device):
    shape, dtype = shape_arg(shape), _as_dtype(dtype) or get_default_dtype()
    data = backend.new_array(device, lambda xp: xp.full(shape, fill, dtype=dtype))
    return Tensor(data, requires_grad=requires_grad)


def zeros(*shape, dtype=None, requires_grad=False, device=None):
    return _filled(0, shape, dtype, requires_grad, device)


def ones(*shape, dtype=None, requires_grad=False, device=None):
    return _filled(1, shape, dtype, requires_grad, device)


def full(shape, fill_value, dtype=None, requires_grad=False, device=None):
    """A tensor of `shape` filled with fill_value, whose dtype it takes by default (bool,
    int64 or the default float, as torch.full)."""
    if dtype is None:
        dtype = _default_dtype_for(fill_value.item() if isinstance(fill_value, Tensor)
                                   else fill_value)
    return _filled(fill_value, (shape,) if isinstance(shape, int) else shape,
                   dtype, requires_grad, device)


def _random(sampler, shape, dtype, requires_grad, device):
    """Draw on the CPU from NumPy's global generator (seeded by tinyres.manual_seed)."""
    if dtype is not None and np.dtype(dtype).kind != "f":      # as torch: floats only
        raise NotImplementedError(f"rand/randn: not implemented for {np.dtype(dtype)}; "
                                  f"draw integers with randint")
    data = sampler(shape_arg(shape)).astype(_as_dtype(dtype) or get_default_dtype())
    return Tensor(backend.to_device(data, device),
                  requires_grad=requires_grad)


def randn(*shape, dtype=None, requires_grad=False, device=None):
    return _random(lambda s: np.random.standard_normal(s), shape, dtype, requires_grad, device)


def rand(*shape, dtype=None, requires_grad=False, device=None):
    return _random(lambda s: np.random.random_sample(s), shape, dtype, requires_grad, device)


def arange(start, end=None, step=1, dtype=None, requires_grad=False, device=None):
    if end is None:
        start, end = 0, start
    is_float = any(isinstance(v, float) for v in (start, end, step))
    dtype = _as_dtype(dtype) or (get_default_dtype() if is_float else np.int64)
    data = backend.new_array(device, lambda xp: xp.arange(start, end, step, dtype=dtype))
    return Tensor(data, requires_grad=requires_grad)


def _like(maker, t, dtype, requires_grad, device, *args):
    return maker(*args, t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad,
                 device=device or t.device)


def zeros_like(t, dtype=None, requires_grad=False, device=None):
    return _like(zeros, t, dtype, requires_grad, device)


def ones_like(t, dtype=None, requires_grad=False, device=None):
    return _like(ones, t, dtype, requires_grad, device)


def randn_like(t, dtype=None, requires_grad=False, device=None):
    return _like(randn, t, dtype, requires_grad, device)


def rand_like(t, dtype=None, requires_grad=False, device=None):
    return _like(rand, t, dtype, requires_grad, device)


def full_like(t, fill_value, dtype=None, requires_grad=False, device=None):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, requires_grad=requires_grad,
                device=device or t.device)


def _device(device):
    """The device a factory puts its tensor on: the CPU when none is named."""
    return backend.resolve_device(device)


def _made(array, dtype, device, requires_grad):
    """A leaf tensor of `array` (computed on the CPU) in dtype on device."""
    array = np.asarray(array).astype(dtype, copy=False)
    return Tensor(backend.to_device(array, _device(device)), requires_grad=requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    """A tensor of the given size (its values zero here; torch leaves them undefined)."""
    return zeros(*size, dtype=dtype, device=_device(device), requires_grad=requires_grad)


def empty_like(input, *, dtype=None, device=None, requires_grad=False):
    """empty with input's shape, and its dtype and device unless told."""
    return empty(input.shape, dtype=dtype or input.dtype, device=device or input.device,
                 requires_grad=requires_grad)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False):
    """An n x m matrix with ones on the diagonal (m = n by default)."""
    m = n if m is None else m
    for name, v in (("n", n), ("m", m)):
        if v < 0:
            raise RuntimeError(f"eye: {name} must be greater or equal to 0, got {v}")
    return _made(np.eye(n, m), _as_dtype(dtype) or get_default_dtype(), device,
                 requires_grad)


def _check_steps(op, steps):
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool):
        raise TypeError(f"{op}(): argument 'steps' must be int, not {type(steps).__name__}")
    if steps < 0:
        raise RuntimeError(f"{op}: number of steps must be non-negative, got {steps}")


def _linspace_values(start, end, steps):
    """torch's symmetric formula: the first half counts up from start, the second half
    down from end, so both ends are exact."""
    i = np.arange(steps, dtype=np.float64)
    step = (end - start) / (steps - 1) if steps > 1 else 0.0
    half = steps // 2 if steps > 1 else 1          # one step: just start
    return np.where(i < half, start + i * step, end - (steps - 1 - i) * step)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False):
    """steps values evenly spaced from start to end, both included."""
    _check_steps("linspace", steps)
    return _made(_linspace_values(float(start), float(end), steps),
                 _as_dtype(dtype) or get_default_dtype(), device, requires_grad)


def logspace(start, end, steps, base=10.0, *, dtype=None, device=None, requires_grad=False):
    """base ** linspace(start, end, steps)."""
    _check_steps("logspace", steps)
    values = np.power(float(base), _linspace_values(float(start), float(end), steps))
    return _made(values, _as_dtype(dtype) or get_default_dtype(), device, requires_grad)


def _randint_bounds(args):
    """(low, high, size) from randint(high, size) or randint(low, high, size)."""
    if len(args) == 2:
        return 0, args[0], args[1]
    if len(args) == 3:
        return args
    raise TypeError(f"randint(): expected (high, size) or (low, high, size), got "
                    f"{len(args)} positional arguments")


def randint(*args, size=None, dtype=None, device=None, requires_grad=False):
    """Integers drawn uniformly from [low, high) (low = 0 by default); int64 by default."""
    if size is not None:
        args = args + (size,)
    low, high, size = _randint_bounds(args)
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"randint(): argument 'size' must be a tuple of ints, not "
                        f"{type(size).__name__}")
    if high <= low:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got "
                           f"from={low} >= to={high}")
    values = np.random.randint(low, high, size=shape_arg(size), dtype=np.int64)
    return _made(values, _as_dtype(dtype) or np.int64, device, requires_grad)


def randint_like(input, *args, dtype=None, device=None, requires_grad=False):
    """randint with input's shape (and dtype unless told): (input, high) or (input, low,
    high)."""
    low, high = (0, args[0]) if len(args) == 1 else args
    return randint(low, high, input.shape, dtype=dtype or input.dtype,
                   device=device or input.device, requires_grad=requires_grad)


def randperm(n, *, dtype=None, device=None, requires_grad=False):
    """A random permutation of 0 .. n-1 (int64 by default)."""
    if n < 0:
        raise RuntimeError(f"randperm: n must be non-negative, got {n}")
    return _made(np.random.permutation(n), _as_dtype(dtype) or np.int64, device,
                 requires_grad)


def normal(mean, std=1.0, size=None, *, dtype=None, device=None, requires_grad=False):
    """Draws from N(mean, std^2): numbers with a size, or tensors of means and/or stds
    (their broadcast shape, their dtype)."""
    if isinstance(mean, Tensor) or isinstance(std, Tensor):
        like = mean if isinstance(mean, Tensor) else std
        m = mean.numpy() if isinstance(mean, Tensor) else mean
        s = std.numpy() if isinstance(std, Tensor) else std
        if np.any(np.asarray(s) < 0):
            raise RuntimeError("normal expects all elements of std >= 0.0")
        shape = np.broadcast_shapes(np.shape(m), np.shape(s))
        return _made(np.random.normal(m, s, shape), dtype or like.dtype, like.device,
                     requires_grad)
    if size is None:
        raise TypeError("normal(): with a number as mean and std, give the size")
    if std < 0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {std}")
    return _made(np.random.normal(mean, std, shape_arg(size)),
                 _as_dtype(dtype) or get_default_dtype(), device, requires_grad)


def as_tensor(data, dtype=None, device=None):
    """data as a tensor, sharing memory where it can: a Tensor of that dtype and device is
    returned as it is, a NumPy array of that dtype is wrapped (from_numpy); anything else
    is copied (tensor)."""
    dtype = _as_dtype(dtype)
    if isinstance(data, Tensor):
        out = data if dtype is None else data.to(dtype=dtype)
        return out if device is None else out.to(_device(device))
    if isinstance(data, np.ndarray) and (dtype is None or dtype == data.dtype) \
            and _device(device) == "cpu":
        return from_numpy(data)
    return tensor(data, dtype=dtype, device=_device(device))
