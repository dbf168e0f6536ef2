"""What the backends share: ReduceOp, DistBackendError, and the missing-engine error."""
import enum


class DistBackendError(RuntimeError):
    """A collective failed or timed out in the backend (torch.distributed's class)."""


class ReduceOp(enum.Enum):
    """How all_reduce combines the ranks' values (torch.distributed.ReduceOp's names).
    AVG is SUM divided by the world size."""

    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    BAND = "band"
    BOR = "bor"
    BXOR = "bxor"


def missing_engine(backend, what, error):
    """The RuntimeError for a backend whose engine cannot be imported, naming the install."""
    return RuntimeError(f"tinyres.distributed: the {backend!r} backend needs {what}; "
                        f"importing it failed: {error}")
