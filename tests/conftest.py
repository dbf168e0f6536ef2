"""Test set-up: repeatable hypothesis examples, the helper modules in tests/ importable,
an installed tinyres (kernels/ is only importable as tinyres.kernels once the package
is installed), and the rule for `gpu` tests: skipped only without a GPU, failed when
the GPU is there but its software stack is broken."""
import functools
import os
import sys

import pytest
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


@functools.lru_cache(maxsize=None)
def _gpu_verdict():
    from tinyres.gpu_probe import gpu_verdict
    return gpu_verdict()


def pytest_runtest_setup(item):
    """A `gpu` test skips only where the GPU is explicitly absent (no driver, no device);
    a GPU whose stack is broken fails the test with the reason (tinyres/gpu_probe.py)."""
    if item.get_closest_marker("gpu") is None:
        return
    action, reason = _gpu_verdict()
    if action == "skip":
        pytest.skip(f"no GPU: {reason}")
    if action == "fail":
        pytest.fail(f"the GPU stack is broken: {reason}", pytrace=False)
