"""Tensor: an array (NumPy or CuPy), its gradient, and its methods.

`t.array` is the NumPy or CuPy array itself; `t.data` is PyTorch's: a Tensor sharing that
memory with no history. In-place writes (functional/inplace.py) bump a version counter
that the tensor shares with its views and detach(); a node checks, at backward, that the
tensors it saved still have the version they had when it saved them.

A Tensor made by an op remembers the op's Context (`_ctx`), which holds the op's inputs.
`backward()` orders the graph once, from the output back to the leaves, and hands each
node the sum of the gradients of everything that consumed it: where one tensor feeds two
branches (a shortcut and a residual branch), their gradients meet with `+`. That walk, the
gradient accumulation and the hooks live in tinyres/backward.py (its names are importable
from here too).
"""
import numpy as np

from tinyres import backend
from tinyres.autograd import VersionCounter, is_inference_mode_enabled

DEFAULT_DTYPE = np.float32          # the float dtype a fresh session starts with
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _DefaultDtype:
    """The dtype float factories and Python floats take (set_default_dtype changes it)."""
    dtype = DEFAULT_DTYPE


def get_default_dtype():
    """The default float dtype: float32 unless set_default_dtype changed it."""
    return _DefaultDtype.dtype


def set_default_dtype(d, /):
    """Make float32 or float64 the dtype of float factories and Python floats."""
    if np.dtype(d) not in FLOAT_DTYPES:
        raise TypeError(f"set_default_dtype: only floating-point types are supported as the "
                        f"default type (float32 or float64), got {np.dtype(d)}")
    _DefaultDtype.dtype = np.dtype(d).type


class Size(tuple):
    """A tensor's shape: a tuple of ints (torch.Size), whose slices are Sizes too."""

    def __repr__(self):
        return f"tinyres.Size({list(self)})"

    def __str__(self):               # the plain tuple in messages: "shape (2, 3)"
        return tuple.__repr__(self)

    def __getitem__(self, index):
        out = super().__getitem__(index)
        return Size(out) if isinstance(index, slice) else out

    def __add__(self, other):
        return Size(tuple(self) + tuple(other))

    def numel(self):
        """How many elements a tensor of this shape holds."""
        return int(np.prod(self, dtype=np.int64))


def _as_dtype(dtype):
    return None if dtype is None else np.dtype(dtype)


class Tensor:
    """An n-dimensional array that can record the ops applied to it."""

    __array_priority__ = 1000  # numpy scalars and arrays defer to Tensor's operators

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.array
        if isinstance(data, np.generic):      # NumPy reductions return scalars: keep a
            data = np.array(data)             # writable 0-d array, as torch's 0-d tensors
        self.array = data             # the NumPy or CuPy array holding the values
        self._grad = None
        self._ctx = None              # the Context of the op that made this tensor
        self._hooks = []
        self._retains_grad = False
        self._version_counter = VersionCounter()   # bumped by every in-place write to the memory
        self._graph_version = 0       # the version this tensor's history describes
        self._base = None             # the tensor this one is a view of (shares memory)
        self._view_of = None          # (input, Function, params) that made this view
        self._consumers = []          # weak refs to the nodes that used it (non-leaves)
        self._inference = is_inference_mode_enabled()
        self._requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ----- the values as a Tensor, PyTorch's .data ---------------------------------------
    @property
    def data(self):
        """A Tensor sharing this one's memory, with no history and a version counter of
        its own: writes through it are invisible to autograd (as in PyTorch; prefer
        `with no_grad():` or detach())."""
        return Tensor(self.array)

    @data.setter
    def data(self, value):
        if not isinstance(value, Tensor):
            raise TypeError(f"data: expected a Tensor to take the memory of, got "
                            f"{type(value).__name__}")
        self.array = value.array

    # ----- what it is -------------------------------------------------------------------
    @property
    def shape(self):
        return Size(self.array.shape)

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def ndim(self):
        return self.array.ndim

    @property
    def device(self):
        """The tinyres.device holding the values: device(type='cpu') or 'cuda:N'."""
        return backend.device_of(self.array)

    @property
    def is_cuda(self):
        return backend.is_cuda_array(self.array)

    def get_device(self):
        """The CUDA device index, -1 on the CPU (torch's get_device)."""
        return -1 if self.device.type == "cpu" else self.device.index

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def grad_fn(self):
        """The node of the op that made this tensor (None for a leaf)."""
        return self._ctx

    @property
    def _version(self):
        """How many in-place writes this tensor's memory has seen (PyTorch's x._version)."""
        return self._version_counter.value

    def _shares_memory_with(self, other):
        xp = backend.get_array_module(self.array)
        return bool(xp.may_share_memory(self.array, other.array))

    def is_inference(self):
        """True for a tensor made inside inference_mode()."""
        return self._inference

    def size(self, dim=None):
        """The shape (a Size), or the length of one dim."""
        if dim is None:
            return self.shape
        return self.shape[fshape._dim(dim, self.ndim, "size")]

    def numel(self):
        return int(self.array.size)

    def dim(self):
        return self.ndim

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = f", device='{self.device}'" if self.is_cuda else ""
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{dev}{grad})"

    # ----- conversions ------------------------------------------------------------------
    def numpy(self):
        """The data as a NumPy array (copied from the GPU if needed); a counted host read."""
        return backend.to_host(self.array)

    def item(self):
        if self.array.size != 1:
            raise RuntimeError(f"a Tensor with {self.array.size} elements cannot be converted "
                               f"to Scalar (item() needs one element; this shape is "
                               f"{self.shape})")
        return backend.item(self.array.reshape(()))

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """The same memory, cut from the graph. In-place writes to either one bump the
        version counter they share, so backward still notices them."""
        out = Tensor(self.array)
        out._version_counter = self._version_counter
        return out

    def requires_grad_(self, requires_grad=True):
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables. "
                               "If you want to use a computed variable in a subgraph that "
                               "doesn't require differentiation use var_no_grad = var.detach().")
        if requires_grad and self._inference and not is_inference_mode_enabled():
            raise RuntimeError("Setting requires_grad=True on inference tensor outside "
                               "InferenceMode is not allowed.")
        if requires_grad and self.dtype not in FLOAT_DTYPES:
            raise RuntimeError(f"only Tensors of floating point dtype can require gradients "
                               f"(this one is {self.dtype})")
        self._requires_grad = bool(requires_grad)
        return self

    @property
    def grad(self):
        """The gradient backward accumulated here (None until then)."""
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got "
                                f"{type(value).__name__}")
            if value.shape != self.shape:
                raise RuntimeError(f"assigned grad has data of a different size: "
                                   f"{value.shape}, the tensor is {self.shape}")
            if value.dtype != self.dtype:
                raise RuntimeError(f"assigned grad has data of a different type: "
                                   f"{value.dtype}, the tensor is {self.dtype}")
        self._grad = value

    @property
    def requires_grad(self):
        """Whether ops on this tensor are recorded for backward."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        self.requires_grad_(value)

    def to(self, *args, **kwargs):
        """torch's three forms: to(device=None, dtype=None, non_blocking=False,
        copy=False), to(dtype, non_blocking=False, copy=False) and to(other, ...), which
        takes other's device and dtype. Self when nothing changes and copy is False;
        otherwise a new tensor, differentiable (the gradient flows back across the cast
        and the device copy)."""
        from tinyres.functional.device import parse_to_args, to_device
        device, dtype, copy = parse_to_args("to", args, kwargs)
        out = self if dtype is None else self.astype(dtype)
        if device is not None:
            out = to_device(out, device)
        return out.clone() if copy and out is self else out

    def cuda(self, device=None, non_blocking=False):
        """A copy on a CUDA device: the current one, or `device` (an index, 'cuda:N')."""
        from tinyres.functional.device import cuda_device
        return self.to(cuda_device(device), non_blocking=non_blocking)

    def cpu(self):
        """A copy on the CPU (self when it is there)."""
        return self.to("cpu")

    def astype(self, dtype):
        from tinyres.functional.math import cast
        return cast(self, dtype)

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    # ----- gradients --------------------------------------------------------------------
    def register_hook(self, hook):
        """Call hook(grad) when this tensor's gradient is complete; a returned Tensor
        replaces the gradient. Returns a handle whose remove() unregisters the hook."""
        if not self.requires_grad:
            raise RuntimeError("register_hook: this tensor does not require a gradient")
        self._hooks.append(hook)
        return _HookHandle(self._hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call hook(self) on a leaf once backward has accumulated its .grad (the point
        where DistributedDataParallel starts a bucket's all-reduce). Returns a handle."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require "
                               "gradient")
        if self._ctx is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on "
                               "non-leaf tensors")
        if "_post_accumulate_hooks" not in self.__dict__:
            self._post_accumulate_hooks = []
        self._post_accumulate_hooks.append(hook)
        return _HookHandle(self._post_accumulate_hooks, hook)

    def retain_grad(self):
        """Keep .grad on this non-leaf tensor after backward."""
        self._retains_grad = True

    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's .grad that requires one."""
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require a gradient and "
                               "has no graph (did you create it under no_grad?)")
        if gradient is None:
            if self.array.size != 1:
                raise RuntimeError(f"backward: a gradient can be created implicitly only "
                                   f"for a scalar output; this one has shape {self.shape}, "
                                   f"so pass backward(gradient) of that shape")
            seed = backend.get_array_module(self.array).ones_like(self.array)
        else:
            if not isinstance(gradient, Tensor) and not hasattr(gradient, "shape"):
                raise TypeError(f"backward: gradient must be a Tensor of the output's shape "
                                f"{self.shape}, got {type(gradient).__name__}")
            seed = gradient.array if isinstance(gradient, Tensor) else gradient
            if tuple(seed.shape) != self.shape:
                raise RuntimeError(f"backward: gradient has shape {tuple(seed.shape)}, "
                                   f"expected the output's shape {self.shape}")
            # read, never written (a backward never writes into grad_out; a leaf's .grad
            # is a copy of it: backward._accumulate), so no copy, as PyTorch
            seed = backend.get_array_module(seed).asarray(seed, dtype=self.dtype, order="C")
        _backward_walk(self, seed, retain_graph)

    # ----- operators (the ops live in tinyres.functional) -----------------------------
    def __add__(self, other):
        return fmath.add(self, other)

    def __radd__(self, other):
        return fmath.add(other, self)

    def __sub__(self, other):
        return fmath.sub(self, other)

    def __rsub__(self, other):
        return fmath.sub(other, self)

    def __mul__(self, other):
        return fmath.mul(self, other)

    def __rmul__(self, other):
        return fmath.mul(other, self)

    def __truediv__(self, other):
        return fmath.div(self, other)

    def __rtruediv__(self, other):
        return fmath.div(other, self)

    def __pow__(self, exponent):
        return fmath.pow(self, exponent)

    def __rpow__(self, base):
        return fmath.pow(base, self)

    def __matmul__(self, other):
        return fmath.matmul(self, other)

    def __rmatmul__(self, other):
        return fmath.matmul(other, self)

    def __floordiv__(self, other):
        return fmath.floor_divide(self, other)

    def __rfloordiv__(self, other):
        return fmath.floor_divide(other, self)

    def __mod__(self, other):
        return fmath.remainder(self, other)

    def __rmod__(self, other):
        return fmath.remainder(other, self)

    def __and__(self, other):
        return fcompare.bitwise(self, other, "and")

    __rand__ = __and__

    def __or__(self, other):
        return fcompare.bitwise(self, other, "or")

    __ror__ = __or__

    def __xor__(self, other):
        return fcompare.bitwise(self, other, "xor")

    __rxor__ = __xor__

    def __invert__(self):
        return fcompare.bitwise_not(self)

    def __neg__(self):
        return fmath.neg(self)

    def __abs__(self):
        return fmath.abs(self)

    def __lt__(self, other):
        return fcompare.compare(self, other, "lt")

    def __le__(self, other):
        return fcompare.compare(self, other, "le")

    def __gt__(self, other):
        return fcompare.compare(self, other, "gt")

    def __ge__(self, other):
        return fcompare.compare(self, other, "ge")

    def __eq__(self, other):
        if other is None:            # as torch: a tensor is never None
            return False
        return fcompare.compare(self, other, "eq")

    def __ne__(self, other):
        if other is None:
            return True
        return fcompare.compare(self, other, "ne")

    __hash__ = object.__hash__

    def __getitem__(self, index):
        return fshape.getitem(self, index)

    def __setitem__(self, index, value):
        finplace.setitem(self, index, value)

    # ----- in place (PyTorch's rules, tinyres/functional/inplace.py) --------------------
    def __iadd__(self, other):
        return finplace.add_(self, other)

    def __isub__(self, other):
        return finplace.sub_(self, other)

    def __imul__(self, other):
        return finplace.mul_(self, other)

    def __itruediv__(self, other):
        return finplace.div_(self, other)

    def __ifloordiv__(self, other):
        return finplace.apply_inplace(self, "floor_divide_", fmath.floor_divide, other)

    def __imod__(self, other):
        return finplace.apply_inplace(self, "remainder_", fmath.remainder, other)

    def __iand__(self, other):
        return finplace.apply_inplace(self, "bitwise_and_",
                                      lambda s, o: fcompare.bitwise(s, o, "and"), other)

    def __ior__(self, other):
        return finplace.apply_inplace(self, "bitwise_or_",
                                      lambda s, o: fcompare.bitwise(s, o, "or"), other)

    def __ixor__(self, other):
        return finplace.apply_inplace(self, "bitwise_xor_",
                                      lambda s, o: fcompare.bitwise(s, o, "xor"), other)

    def masked_fill_(self, mask, value):
        return finplace.apply_inplace(self, "masked_fill_",
                                      lambda s, v: fmath.masked_fill(s, mask, v), value)

    def add_(self, other, *, alpha=1):
        return finplace.add_(self, other, alpha)

    def sub_(self, other, *, alpha=1):
        return finplace.sub_(self, other, alpha)

    def mul_(self, other):
        return finplace.mul_(self, other)

    def div_(self, other):
        return finplace.div_(self, other)

    def clamp_(self, min=None, max=None):
        return finplace.clamp_(self, min, max)

    def relu_(self):
        return finplace.relu_(self)

    def zero_(self):
        return finplace.zero_(self)

    def fill_(self, value):
        return finplace.fill_(self, value)

    def copy_(self, src):
        return finplace.copy_(self, src)

    def clone(self):
        """A copy with its own memory, differentiable (the gradient passes unchanged)."""
        return fmath.clone(self)

    def __bool__(self):
        return bool(self.item())

    # ----- Python conversions, as torch -------------------------------------------------
    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.kind not in "iub" or self.array.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to "
                            "an index")
        return int(self.item())

    def __format__(self, spec):
        return format(self.item(), spec) if self.ndim == 0 else super().__format__(spec)

    def __array__(self, dtype=None, copy=None):
        """np.asarray(t): the values as a NumPy array (refused while t records a graph,
        as torch refuses, since NumPy would cut the gradient silently)."""
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use "
                               "tensor.detach().numpy() instead.")
        out = self.numpy()
        if dtype is not None and out.dtype != np.dtype(dtype):
            return out.astype(dtype)
        return out.copy() if copy else out

    # ----- methods that mirror tinyres.functional ---------------------------------------
    # Reductions (tinyres/functional/math.py and reduction.py)
    def sum(self, dim=None, keepdim=False, *, dtype=None):
        return fmath.sum(self, dim, keepdim, dtype=dtype)

    def mean(self, dim=None, keepdim=False, *, dtype=None):
        return fmath.mean(self, dim, keepdim, dtype=dtype)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return fmath.var(self, dim, unbiased, keepdim, correction=correction)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return fmath.std(self, dim, unbiased, keepdim, correction=correction)

    def max(self, dim=None, keepdim=False):
        return fmath.max(self, dim, keepdim)

    def min(self, dim=None, keepdim=False):
        return fmath.min(self, dim, keepdim)

    def prod(self, dim=None, keepdim=False, *, dtype=None):
        return freduce.prod(self, dim, keepdim, dtype=dtype)

    def cumsum(self, dim, *, dtype=None):
        return freduce.cumsum(self, dim, dtype=dtype)

    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        return freduce.norm(self, p, dim, keepdim, dtype)

    def amax(self, dim=(), keepdim=False):
        return freduce.amax(self, dim, keepdim)

    def amin(self, dim=(), keepdim=False):
        return freduce.amin(self, dim, keepdim)

    def logsumexp(self, dim, keepdim=False):
        return freduce.logsumexp(self, dim, keepdim)

    def floor(self):
        return fpoint.floor(self)

    def ceil(self):
        return fpoint.ceil(self)

    def round(self, *, decimals=0):
        return fpoint.round(self, decimals=decimals)

    def trunc(self):
        return fpoint.trunc(self)

    def sign(self):
        return fpoint.sign(self)

    def square(self):
        return fpoint.square(self)

    def rsqrt(self):
        return fpoint.rsqrt(self)

    def argmax(self, dim=None, keepdim=False):
        return freduce.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return freduce.argmin(self, dim, keepdim)

    def all(self, dim=None, keepdim=False):
        return freduce.all(self, dim, keepdim)

    def any(self, dim=None, keepdim=False):
        return freduce.any(self, dim, keepdim)

    def sort(self, dim=-1, descending=False, *, stable=False):
        return freduce.sort(self, dim, descending, stable=stable)

    def argsort(self, dim=-1, descending=False, *, stable=False):
        return freduce.argsort(self, dim, descending, stable=stable)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        return freduce.topk(self, k, dim, largest, sorted)

    # Elementwise
    def add(self, other, *, alpha=1):
        return fmath.add(self, other, alpha=alpha)

    def sub(self, other, *, alpha=1):
        return fmath.sub(self, other, alpha=alpha)

    def mul(self, other):
        return fmath.mul(self, other)

    def div(self, other, *, rounding_mode=None):
        return fmath.div(self, other, rounding_mode=rounding_mode)

    def floor_divide(self, other):
        return fmath.floor_divide(self, other)

    def remainder(self, other):
        return fmath.remainder(self, other)

    def pow(self, exponent):
        return fmath.pow(self, exponent)

    def neg(self):
        return fmath.neg(self)

    def exp(self):
        return fmath.exp(self)

    def log(self):
        return fmath.log(self)

    def sqrt(self):
        return fmath.sqrt(self)

    def abs(self):
        return fmath.abs(self)

    def clamp(self, min=None, max=None):
        return fmath.clamp(self, min, max)

    clip = clamp

    def maximum(self, other):
        return fmath.maximum(self, other)

    def minimum(self, other):
        return fmath.minimum(self, other)

    def relu(self):
        from tinyres.functional.activation import relu
        return relu(self)

    def sigmoid(self):
        from tinyres.functional.activation import sigmoid
        return sigmoid(self)

    def tanh(self):
        from tinyres.functional.activation import tanh
        return tanh(self)

    def softmax(self, dim):
        from tinyres.functional.activation import softmax
        return softmax(self, dim)

    def log_softmax(self, dim):
        from tinyres.functional.activation import log_softmax
        return log_softmax(self, dim)

    def matmul(self, other):
        return fmath.matmul(self, other)

    def mm(self, mat2):
        return fmath.mm(self, mat2)

    def bmm(self, mat2):
        return fmath.bmm(self, mat2)

    def masked_fill(self, mask, value):
        return fmath.masked_fill(self, mask, value)

    # Comparisons and tests
    def eq(self, other):
        return fcompare.eq(self, other)

    def ne(self, other):
        return fcompare.ne(self, other)

    def lt(self, other):
        return fcompare.lt(self, other)

    def le(self, other):
        return fcompare.le(self, other)

    def gt(self, other):
        return fcompare.gt(self, other)

    def ge(self, other):
        return fcompare.ge(self, other)

    def isclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        return fcompare.isclose(self, other, rtol, atol, equal_nan)

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        return fcompare.allclose(self, other, rtol, atol, equal_nan)

    def equal(self, other):
        return fcompare.equal(self, other)

    def is_floating_point(self):
        return self.dtype.kind == "f"

    def nelement(self):
        return self.numel()

    # Shape (tinyres/functional/shape.py)
    def reshape(self, *shape):
        return fshape.reshape(self, *shape)

    def view(self, *shape):
        return fshape.view(self, *shape)

    def view_as(self, other):
        return fshape.view(self, other.shape)

    def reshape_as(self, other):
        return fshape.reshape(self, other.shape)

    def expand_as(self, other):
        return fshape.expand(self, other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        return fshape.flatten(self, start_dim, end_dim)

    def transpose(self, dim0, dim1):
        return fshape.transpose(self, dim0, dim1)

    def permute(self, *dims):
        return fshape.permute(self, *dims)

    def squeeze(self, dim=None):
        return fshape.squeeze(self, dim)

    def unsqueeze(self, dim):
        return fshape.unsqueeze(self, dim)

    def expand(self, *shape):
        return fshape.expand(self, *shape)

    def flip(self, *dims):
        return fshape.flip(self, fshape.shape_arg(dims))

    def repeat(self, *sizes):
        return fshape.repeat(self, *sizes)

    def split(self, split_size, dim=0):
        return fshape.split(self, split_size, dim)

    def chunk(self, chunks, dim=0):
        return fshape.chunk(self, chunks, dim)

    def gather(self, dim, index):
        return fshape.gather(self, dim, index)

    def is_contiguous(self):
        return bool(self.array.flags.c_contiguous)

    def contiguous(self):
        """self when its memory is in row-major order, else a differentiable copy that is."""
        return self if self.is_contiguous() else fmath.clone(self)

    def t(self):
        return fshape.t(self)

    @property
    def T(self):
        return fshape.permute(self, *reversed(range(self.ndim)))

    # dtype conversions (float() and double() are above, with to())
    def long(self):
        return self.to(dtype=np.int64)

    def int(self):
        return self.to(dtype=np.int32)

    def bool(self):
        return self.to(dtype=np.bool_)

    def half(self):
        return self.to(dtype=np.float16)

    def type_as(self, other):
        return self.to(dtype=other.dtype)

    def type(self, dtype=None):
        """With a dtype, a copy cast to it; without, the legacy type name torch gives
        ('tinyres.FloatTensor' where torch says 'torch.FloatTensor')."""
        if dtype is not None:
            return self.to(dtype=dtype)
        return f"tinyres.{_TYPE_NAMES[self.dtype.name]}"

    def element_size(self):
        """Bytes per element."""
        return int(self.dtype.itemsize)

    # New tensors like this one (its dtype and device unless told otherwise)
    def _new(self, maker, size, dtype, device, requires_grad, *args):
        return maker(fshape.shape_arg(size), *args, dtype=dtype or self.dtype,
                     device=device or self.device, requires_grad=requires_grad)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new(factories.zeros, size, dtype, device, requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new(factories.ones, size, dtype, device, requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new(factories.zeros, size, dtype, device, requires_grad)

    def new_full(self, size, fill_value, *, dtype=None, device=None, requires_grad=False):
        return factories.full(size, fill_value, dtype=dtype or self.dtype,
                    device=device or self.device, requires_grad=requires_grad)

    def new_tensor(self, data, *, dtype=None, device=None, requires_grad=False):
        return factories.tensor(data, dtype=dtype or self.dtype, device=device or self.device,
                      requires_grad=requires_grad)

    # Random fills in place (no gradient flows through the drawn values)
    def normal_(self, mean=0.0, std=1.0):
        """Overwrite with draws from N(mean, std^2) (NumPy's generator, as randn)."""
        return self._fill_random("normal_", lambda: np.random.normal(mean, std, self.shape))

    def uniform_(self, a=0.0, b=1.0):
        """Overwrite with draws from U[a, b) (NumPy's generator, as rand)."""
        return self._fill_random("uniform_", lambda: np.random.uniform(a, b, self.shape))

    def _fill_random(self, op, draw):
        if self.dtype.kind != "f":
            raise NotImplementedError(f'"{op}" not implemented for \'{self.dtype}\'')
        values = Tensor(backend.to_device(np.asarray(draw(), dtype=self.dtype), self.device))
        return finplace.apply_inplace(self, op, lambda s, v: finplace.CopyFrom.apply(s, v),
                                      values)


_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
               "int64": "LongTensor", "int32": "IntTensor", "int16": "ShortTensor",
               "int8": "CharTensor", "uint8": "ByteTensor", "bool": "BoolTensor"}


def manual_seed(seed):
    """Seed the generator behind randn/rand and the layer initialisers."""
    np.random.seed(seed)


# The methods above call these; imported last because they import Tensor.
from tinyres.backward import (_HookHandle, _accumulate, _backward_walk,  # noqa: E402,F401
                              _run_hooks, _run_post_accumulate_hooks, _topological_order)
from tinyres.functional import math as fmath  # noqa: E402
from tinyres.functional import shape as fshape  # noqa: E402
from tinyres.functional import inplace as finplace  # noqa: E402
from tinyres.functional import reduction as freduce  # noqa: E402
from tinyres.functional import compare as fcompare  # noqa: E402
from tinyres.functional import pointwise as fpoint  # noqa: E402
from tinyres import factories  # noqa: E402
