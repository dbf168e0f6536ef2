"""Test set-up: make the helper modules in tests/ importable and require an installed
tinyres (kernels/ is only importable as tinyres.kernels once the package is installed)."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

try:
    import tinyres.kernels  # noqa: F401
except ImportError as err:   # pragma: no cover - a set-up problem, not a test
    raise ImportError("tinyres is not installed: run `pip install -e .[dev]` in the "
                      "repository root first") from err
