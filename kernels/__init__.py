"""Kernels of tinyres, three layers with one signature each.

reference.py is pure NumPy and the readable specification; cpu.py is the Numba version;
cuda.py launches the CUDA C sources in cuda/*.cu through CuPy. By default an op takes
cpu.py for NumPy arrays and cuda.py for CuPy arrays (tinyres.backend.kernels_for). Any
layer can be chosen instead, for this thread:

    tinyres.kernels.use("reference")            # from now on, in this thread
    with tinyres.kernels.use("reference"):      # for one block, then back
        loss = F.cross_entropy(model(x), y)     # a debugger can step into reference.py

or for a whole run with the environment variable TINYRES_KERNELS=reference.
"""
import os
import threading

# This folder is installed as tinyres.kernels (setup.py). Imported under another name too
# (`import kernels` with the repository's root on sys.path) it would be a second copy of
# every module, with its own convolution policy, buffer cache and layer choice, and the
# kernels it compiled would go into Numba's on-disk cache, which is keyed by source file:
# tinyres.kernels would later load them and fail with "No module named 'kernels'".
if __name__ != "tinyres.kernels":
    raise ImportError(
        f"{__name__}: this is tinyres's kernel package; import it as tinyres.kernels "
        f"(`from tinyres.kernels import cpu`), not as {__name__!r}: a second copy under "
        "another name would write Numba cache entries that tinyres.kernels cannot load")

LAYERS = ("reference", "cpu", "cuda")
ENVIRONMENT_VARIABLE = "TINYRES_KERNELS"

_chosen = threading.local()


def _check_layer(layer, where):
    if layer not in LAYERS:
        raise ValueError(f"{where}: unknown kernel layer {layer!r}; expected one of "
                         f"{', '.join(repr(name) for name in LAYERS)}")
    if layer == "cuda":
        from tinyres.backend import check_device
        check_device("cuda")          # a clear error where CUDA cannot run
    return layer


def chosen():
    """The layer chosen for this thread (by use(), else by TINYRES_KERNELS), or None:
    then each op takes the fast layer of its array's device."""
    layer = getattr(_chosen, "layer", None)
    if layer is not None:
        return layer
    from_environment = os.environ.get(ENVIRONMENT_VARIABLE)
    if from_environment:
        return _check_layer(from_environment, ENVIRONMENT_VARIABLE)
    return None


class use:
    """Run ops on one kernel layer: 'reference' (NumPy), 'cpu' (Numba) or 'cuda' (CUDA C).

    As a call it takes effect at once for this thread; as a `with` block it lasts until
    the block ends, exceptions included. use(None) goes back to choosing by device."""

    def __init__(self, layer):
        self.layer = None if layer is None else _check_layer(layer, "tinyres.kernels.use")
        self._previous = getattr(_chosen, "layer", None)
        _chosen.layer = self.layer

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _chosen.layer = self._previous
        return False
