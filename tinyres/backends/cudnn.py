"""tinyres.backends.cudnn: torch.backends.cudnn's flags, settable and harmless.

    tinyres.backends.cudnn.benchmark = True        # accepted; tinyres has no cuDNN
    tinyres.backends.cudnn.deterministic = True

tinyres's convolutions are im2col + one GEMM (NumPy/BLAS on the CPU, CuPy/cuBLAS on the
GPU) with no algorithm search, so the flags have nothing to switch: they are plain module
attributes that a script may set and read back, with torch's defaults (benchmark False,
deterministic False, enabled True, allow_tf32 True), and nothing in tinyres reads them.
"""
enabled = True
benchmark = False
deterministic = False
allow_tf32 = True


def is_available():
    """False: tinyres never calls cuDNN (torch answers whether its cuDNN can be used)."""
    return False


def version():
    """None, as torch.backends.cudnn.version() where cuDNN is unavailable."""
    return None
