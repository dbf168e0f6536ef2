"""A restricted unpickler for data files: builtin containers and NumPy arrays, nothing else.

The CIFAR python batches are pickles, and `pickle.load` will run any callable a file names.
`safe_load` refuses every global except the few that rebuild NumPy arrays and dtypes (and
`_codecs.encode`, which protocol-2 pickles written by Python 3 use for bytes), so a
tampered file raises pickle.UnpicklingError instead of executing code.

    with open(path, "rb") as f:
        batch = safe_load(f)            # {'data': uint8 array, 'labels': [...], ...}
"""
import pickle

ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("__builtin__", "bytearray"),
})


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose find_class only returns the globals in ALLOWED_GLOBALS."""

    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"safe_load: refusing to load global {module}.{name}: only builtin "
                f"containers and NumPy arrays are allowed in a data file")
        return super().find_class(module, name)


def safe_load(file, encoding="latin1"):
    """Unpickle `file` (an open binary file) allowing only containers, numbers, strings,
    bytes and NumPy arrays. `encoding` decodes Python 2 strings, as in pickle.load;
    latin1 (torchvision's choice) keeps NumPy's raw byte buffers intact."""
    return RestrictedUnpickler(file, encoding=encoding).load()
