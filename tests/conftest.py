"""Test set-up: repeatable hypothesis examples, the helper modules in tests/ importable,
and an installed tinyres (kernels/ is only importable as tinyres.kernels once the package
is installed)."""
import os
import sys

from hypothesis import settings

# The same examples on every run (CI is reproducible; a failure found once is found again).
# Run `pytest --hypothesis-profile=explore` to draw new ones.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("repeatable")

sys.path.insert(0, os.path.dirname(__file__))

try:
    import tinyres.kernels  # noqa: F401
except ImportError as err:   # pragma: no cover - a set-up problem, not a test
    raise ImportError("tinyres is not installed: run `pip install -e .[dev]` in the "
                      "repository root first") from err
