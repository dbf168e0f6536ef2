"""2-D convolution as im2col + one GEMM over the whole batch, for any kernel layer.

With w2 = weight.reshape(OC, C*kh*kw) and g2 = grad_out as (OC, N*OH*OW):
Forward:   cols = im2col(x)            (C*kh*kw, N*OH*OW): every window a column
           out  = w2 @ cols            (OC, N*OH*OW), then NCHW
Backward:  grad_w2 = g2 @ cols^T       the columns rebuilt from x, not kept from forward
           grad_x  = col2im(w2^T @ g2) col2im is the adjoint of im2col
The whole batch sits side by side in the columns, so each pass is one large GEMM. The
columns are kh*kw times the size of x, so backward rebuilds them instead of keeping them
alive between the passes. A 1x1 stride-1 unpadded convolution needs no im2col: x with its
channels first is its columns.

With groups, w2 is (OC, C/groups*kh*kw) and each group's output channels multiply only
its own rows of the columns (its input channels): the GEMMs of the groups are one batched
xp.matmul (grouped_matmul); a depthwise layer (groups = C) is C small GEMMs in one call.

reference.py convolves this way (xp = NumPy); cuda.py keeps the columns per image
instead, its batched GEMMs writing NCHW (kernels/nchw_conv.py); cpu.py does for grouped
layers, where an image has fewer output pixels than output channels, or where SciPy's
BLAS cannot be held to one thread (see its convolution section).
"""


def channels_first(xp, a):
    """(N, C, H, W) -> (C, N*H*W), contiguous: the layout of the columns."""
    return xp.ascontiguousarray(a.transpose(1, 0, 2, 3)).reshape(a.shape[1], -1)


def batch_first(xp, a2, n, h, w):
    """(C, N*H*W) -> (N, C, H, W), contiguous: back to NCHW."""
    return xp.ascontiguousarray(a2.reshape(a2.shape[0], n, h, w).transpose(1, 0, 2, 3))


def is_pointwise(kh, kw, sh, sw, ph, pw):
    """True for a 1x1 stride-1 unpadded kernel, whose columns are x itself (a 1x1 window
    has no taps to spread, so its dilation does not matter)."""
    return (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0)


def columns(xp, im2col, x, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """The im2col matrix of x, (C*kh*kw, N*OH*OW)."""
    if is_pointwise(kh, kw, sh, sw, ph, pw):
        return channels_first(xp, x)
    return im2col(x, kh, kw, sh, sw, ph, pw, dh, dw)


def by_group(a2, groups):
    """(R, Q) -> (groups, R/groups, Q): the rows of each group, a view. The rows of the
    columns are ordered channel first, so a group's channels are consecutive rows."""
    return a2.reshape(groups, a2.shape[0] // groups, a2.shape[1])


def grouped_matmul(xp, a2, b2, groups, transpose_a=False, transpose_b=False, matmul=None):
    """The GEMMs of the groups side by side, one batched matmul: for each group k,
    block k of the result's rows = (a2's block k)[^T] @ (b2's block k)[^T]. `matmul`, where
    given, runs an ungrouped layer's one GEMM instead: matmul(a2, b2, transpose_a,
    transpose_b) (cpu.py gives kernels/thread_gemm.py's)."""
    if matmul is not None and groups == 1:
        return matmul(a2, b2, transpose_a, transpose_b)
    a3, b3 = by_group(a2, groups), by_group(b2, groups)
    if transpose_a:
        a3 = a3.transpose(0, 2, 1)
    if transpose_b:
        b3 = b3.transpose(0, 2, 1)
    out = xp.matmul(a3, b3)
    return out.reshape(groups * out.shape[1], out.shape[2])


def conv2d_forward(xp, im2col, x, w2, kh, kw, sh, sw, ph, pw, oh, ow, dh=1, dw=1, groups=1,
                   bias=None, matmul=None):
    """out (N, OC, OH, OW) = the convolution of x (N, C, H, W) with w2 (OC, C/groups*kh*kw),
    plus bias (OC,) where given. matmul: grouped_matmul's."""
    cols = columns(xp, im2col, x, kh, kw, sh, sw, ph, pw, dh, dw)
    out = batch_first(xp, grouped_matmul(xp, w2, cols, groups, matmul=matmul),
                      x.shape[0], oh, ow)
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out


def conv2d_backward(xp, im2col, col2im, grad_out, x, w2, kh, kw, sh, sw, ph, pw,
                    need_x, need_w, dh=1, dw=1, groups=1, matmul=None):
    """(grad_x, grad_w2) of the convolution; either is None where not needed.
    matmul: grouped_matmul's."""
    g2 = channels_first(xp, grad_out)
    grad_x = grad_w2 = None
    if need_x:
        grad_cols = grouped_matmul(xp, w2, g2, groups, transpose_a=True, matmul=matmul)
        if is_pointwise(kh, kw, sh, sw, ph, pw):
            grad_x = batch_first(xp, grad_cols, x.shape[0], *x.shape[2:])
        else:
            grad_x = col2im(grad_cols, x.shape, kh, kw, sh, sw, ph, pw, dh, dw)
    if need_w:
        cols = columns(xp, im2col, x, kh, kw, sh, sw, ph, pw, dh, dw)
        grad_w2 = grouped_matmul(xp, g2, cols, groups, transpose_b=True, matmul=matmul)
    return grad_x, grad_w2
