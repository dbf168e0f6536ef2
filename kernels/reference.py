"""Pure-NumPy kernels: the readable specification that cpu.py and cuda.py are held to.

Every image is NCHW. Each function here is written to be obviously right rather than
fast: loops run over the few window offsets (i, j) of a kernel and NumPy does the rest.
Batch-norm statistics are accumulated in float64 and cast back to the input's dtype.
All functions accept float32 or float64 arrays of any memory layout and never modify
their inputs, except batchnorm_forward, which updates the running statistics in place.

The argument checks live in checks.py, shared by all three layers, so that all of them
reject bad input with the same message.
"""
import numpy as np

from . import checks, gemm_conv

def _window_slice(start, count, step):
    """The slice that picks `count` elements from `start` on, every `step`-th."""
    return slice(start, start + step * (count - 1) + 1, step)


def im2col(x, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """Unfold every kh x kw window of x into a column, the images of the batch side by side.

    x (N, C, H, W) -> cols (C*kh*kw, N*OH*OW), OH = (H + 2*ph - dh*(kh - 1) - 1)//sh + 1
    (OW alike), the window's taps (dh, dw) apart (the dilation; 1 is a dense window).
    cols[(c*kh + i)*kw + j, n*OH*OW + oh*OW + ow] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw],
    zero where that pixel lies in the padding. weight.reshape(OC, C*kh*kw) @ cols is then
    the whole batch's convolution in one GEMM, of shape (OC, N*OH*OW): output channel
    first, so one transpose of its (OC, N) axes gives NCHW.
    """
    oh, ow = checks.im2col_args(x, kh, kw, sh, sw, ph, pw, dh, dw)
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            # window element (i, j) of every output pixel of every image at once;
            # the window is (N, C, OH, OW), its (C, N) swapped to match cols
            window = padded[:, :, _window_slice(i * dh, oh, sh), _window_slice(j * dw, ow, sw)]
            cols[:, i, j] = window.transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * oh * ow)


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """The adjoint of im2col: add every column entry back onto the pixel it came from.

    cols (C*kh*kw, N*OH*OW) -> dx of shape x_shape = (N, C, H, W); entries that were read
    from the padding are dropped. Overlapping windows accumulate.
    """
    n, c, h, w, oh, ow = checks.col2im_args(cols, x_shape, kh, kw, sh, sw, ph, pw, dh, dw)
    cols6 = cols.reshape(c, kh, kw, n, oh, ow)
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # one (i, j) never hits a pixel twice, so += on the strided view is safe
            window = padded[:, :, _window_slice(i * dh, oh, sh), _window_slice(j * dw, ow, sw)]
            window += cols6[:, i, j].transpose(1, 0, 2, 3)
    return padded[:, :, ph:ph + h, pw:pw + w].copy()


def conv2d_forward(x, w2, kh, kw, sh, sw, ph, pw, dh=1, dw=1, groups=1, bias=None,
                   scale=None, relu=False, residual=None, residual_scale=1.0):
    """The convolution of x (N, C, H, W) with w2 = weight.reshape(OC, C/groups*kh*kw),
    plus bias (OC,) where given (added to every pixel of its channel); with scale (OC,),
    channel_affine(out, scale, bias) instead (batch norm in evaluation); with residual
    (the output's shape), then add_scaled(out, residual, residual_scale) (a residual
    block's shortcut, F(x) + lambda x); relu: then relu_forward.

    -> out (N, OC, OH, OW). With Cg = C/groups input and OCg = OC/groups output channels a
    group, output channel o reads the input channels of its group, g = o // OCg:
    out[n, o, y, z] = sum over (c, i, j) of w2[o, (c*kh + i)*kw + j] *
    x[n, g*Cg + c, y*sh - ph + i*dh, z*sw - pw + j*dw] (zero in the padding):
    im2col of the whole batch, then one GEMM per group (kernels/gemm_conv.py).
    """
    oh, ow = checks.conv2d_forward_args(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias,
                                        scale, residual)
    out = gemm_conv.conv2d_forward(np, im2col, x, w2, kh, kw, sh, sw, ph, pw, oh, ow,
                                   dh, dw, groups, bias if scale is None else None)
    out = out if scale is None else channel_affine(out, scale, bias)
    out = out if residual is None else add_scaled(out, residual, residual_scale)
    return relu_forward(out) if relu else out


def conv2d_backward(grad_out, x, w2, kh, kw, sh, sw, ph, pw, need_x=True, need_w=True,
                    dh=1, dw=1, groups=1):
    """The gradients of conv2d_forward -> (grad_x like x, grad_w2 like w2), each None
    unless asked for; per group, grad_w2 = grad_out (OCg, N*OH*OW) @ im2col(x)^T and
    grad_x = col2im(w2^T @ grad_out)."""
    checks.conv2d_backward_args(grad_out, x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups)
    return gemm_conv.conv2d_backward(np, im2col, col2im, grad_out, x, w2,
                                     kh, kw, sh, sw, ph, pw, need_x, need_w, dh, dw, groups)


def batchnorm_forward(x, weight, bias, running_mean, running_var, momentum, eps):
    """Training-mode batch norm over the axes (0, 2, 3) of x.

    x (N, C, H, W), weight and bias (C,) -> (y, mean, invstd): y like x, mean and invstd (C,)
    in x's dtype, invstd = 1/sqrt(biased_var + eps), y = (x - mean)*invstd*weight + bias.
    running_mean and running_var ((C,) or None) are updated in place as PyTorch does:
    r = (1 - momentum)*r + momentum*batch_stat, using the unbiased variance.
    """
    m = checks.batchnorm_forward_args(x, weight, bias, running_mean, running_var)
    if m == 0:     # an empty batch (as PyTorch): empty y, the running statistics untouched
        return np.empty_like(x), np.zeros(x.shape[1], x.dtype), np.zeros(x.shape[1], x.dtype)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3))
    centred = x64 - mean[None, :, None, None]
    var = (centred * centred).mean(axis=(0, 2, 3))
    invstd = 1.0 / np.sqrt(var + eps)
    scale = (invstd * weight)[None, :, None, None]
    y = centred * scale + np.asarray(bias, dtype=np.float64)[None, :, None, None]
    if running_mean is not None:
        running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
    if running_var is not None:
        running_var[...] = (1.0 - momentum) * running_var + momentum * var * (m / (m - 1))
    return y.astype(x.dtype), mean.astype(x.dtype), invstd.astype(x.dtype)


def batchnorm_backward(grad_out, x, weight, mean, invstd):
    """The gradient of training-mode batch norm, the batch statistics depending on x.

    grad_out and x (N, C, H, W), weight, mean, invstd (C,) -> (grad_x, grad_weight,
    grad_bias): grad_x like x, the others (C,), all in x's dtype. With m = N*H*W and
    xhat = (x - mean)*invstd:
    grad_bias = sum(grad_out), grad_weight = sum(grad_out*xhat) (sums over 0, 2, 3),
    grad_x = weight*invstd/m * (m*grad_out - grad_bias - xhat*grad_weight).
    """
    m = checks.batchnorm_backward_args(grad_out, x, weight, mean, invstd)
    if m == 0:     # an empty batch: no gradient reaches weight and bias
        return np.empty_like(x), np.zeros(x.shape[1], x.dtype), np.zeros(x.shape[1], x.dtype)

    def per_channel(v):
        return np.asarray(v, dtype=np.float64)[None, :, None, None]

    g = grad_out.astype(np.float64)
    xhat = (x.astype(np.float64) - per_channel(mean)) * per_channel(invstd)
    grad_bias = g.sum(axis=(0, 2, 3))
    grad_weight = (g * xhat).sum(axis=(0, 2, 3))
    grad_x = per_channel(np.asarray(weight, dtype=np.float64) * invstd / m) * (
        m * g - per_channel(grad_bias) - xhat * per_channel(grad_weight))
    dtype = x.dtype
    return grad_x.astype(dtype), grad_weight.astype(dtype), grad_bias.astype(dtype)


def relu_forward(x, out=None):
    """max(x, 0) elementwise; x of any shape, y like x (NaN passes through), written into
    `out` where given (x's shape and dtype; x itself for an in-place ReLU)."""
    checks.relu_forward_args(x, out)
    y = np.where(x < 0, x.dtype.type(0), x)   # -0.0 stays -0.0, as PyTorch (np.maximum would
    if out is None:                           # return 0.0 there)
        return y
    out[...] = y
    return out


def add_scaled(a, b, scale=1.0, out=None):
    """a + scale * b elementwise, a and b of one shape and float dtype: scale rounded to
    their dtype, the product rounded, then the sum (NumPy's order for `a + scale * b` with
    a Python float). The residual addition, ResidualAdd.forward; written into `out` where
    given (a itself: a += b, where the backward walk adds two gradients of one tensor)."""
    checks.add_scaled_args(a, b, out)
    return np.add(a, b if scale == 1.0 else a.dtype.type(scale) * b, out=out)


def relu_backward(grad_out, x):
    """grad_out * 1[not x <= 0] elementwise: zero where x <= 0 (x == 0 included), and a
    NaN in x lets its gradient through, as PyTorch; any shape."""
    checks.relu_backward_args(grad_out, x)
    return np.where(x <= 0, grad_out.dtype.type(0), grad_out)


def maxpool_forward(x, kh, kw, sh, sw, ph, pw, dh=1, dw=1, ceil_mode=False):
    """Max pooling, the padding acting as -inf.

    x (N, C, H, W) -> (y, idx), both (N, C, OH, OW): the window of output (oh, ow) has
    taps (oh*sh - ph + i*dh, ow*sw - pw + j*dw) for i < kh, j < kw (dh, dw: the dilation);
    OH = (H + 2*ph - dh*(kh - 1) - 1)//sh + 1, or in ceil mode rounded up but with every
    window starting inside the input or its left padding (checks.pool_out_size).
    idx (int64) is the flat index h*W + w of the chosen element within its (n, c) plane.
    Each window is walked in row-major order from its first tap inside the input, and only
    a strictly larger value takes over, so ties go to the first maximum; a NaN always takes
    over, so the last NaN in the window wins (as PyTorch, whose gradient then goes to that
    NaN). A window whose taps all miss the input (dilation can skip over it) gives -inf at
    index h0*W + w0, h0 and w0 its first row and column taps >= 0, as PyTorch.
    """
    oh, ow = checks.maxpool_forward_args(x, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode)
    n, c, h, w = x.shape
    top = np.arange(oh)[:, None] * sh - ph         # first row of each window (may be < 0)
    left = np.arange(ow)[None, :] * sw - pw        # first column of each window
    bottom = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - (h + 2 * ph))   # ceil mode's extra
    right = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - (w + 2 * pw))
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph + bottom), (pw, pw + right)),
                    constant_values=-np.inf)
    best = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    first = checks.first_tap(top, dh) * w + checks.first_tap(left, dw)
    idx = np.broadcast_to(first, best.shape).copy()
    for i in range(kh):
        for j in range(kw):
            v = padded[:, :, _window_slice(i * dh, oh, sh), _window_slice(j * dw, ow, sw)]
            takes_over = (v > best) | np.isnan(v)
            best = np.where(takes_over, v, best)
            idx = np.where(takes_over, (top + i * dh) * w + (left + j * dw), idx)
    return best, idx.astype(np.int64)


def maxpool_backward(grad_out, idx, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1,
                     ceil_mode=False):
    """Send each output gradient back to the input element its window chose.

    grad_out and idx (N, C, OH, OW) -> grad_x of shape x_shape = (N, C, H, W): a zero
    array into which grad_out is scatter-added at idx (overlapping windows accumulate).
    A window with no input element (checks.pool_empty_windows) sends nothing: its -inf
    depends on no input.
    """
    n, c, h, w, oh, ow = checks.maxpool_backward_args(grad_out, idx, x_shape, kh, kw, sh, sw,
                                                      ph, pw, dh, dw, ceil_mode)
    grad_out, idx = checks.without_empty_windows(grad_out, idx, x_shape, kh, kw, sh, sw, ph,
                                                 pw, dh, dw, oh, ow)
    grad_x = np.zeros((n * c, h * w), dtype=grad_out.dtype)
    planes = np.arange(n * c)[:, None]
    np.add.at(grad_x, (planes, idx.reshape(n * c, oh * ow)), grad_out.reshape(n * c, oh * ow))
    return grad_x.reshape(n, c, h, w)


def batchnorm_relu_forward(x, weight, bias, running_mean, running_var, momentum, eps,
                           training=True):
    """relu(batch norm of x), the ReLU fused into batch norm's elementwise pass.

    x (N, C, H, W), weight and bias (C,) -> (y, mean, invstd) as batchnorm_forward, with
    y = max((x - mean)*invstd*weight + bias, 0) (a NaN passes through). training=True:
    the batch statistics, and the running ones ((C,) or None) updated in place exactly as
    batchnorm_forward does; training=False: mean = running_mean and invstd =
    1/sqrt(running_var + eps), nothing updated (momentum unused).
    """
    checks.batchnorm_relu_forward_args(x, weight, bias, running_mean, running_var, training)
    if training:
        y, mean, invstd = batchnorm_forward(x, weight, bias, running_mean, running_var,
                                            momentum, eps)
        return relu_forward(y), mean, invstd
    mean = np.asarray(running_mean, dtype=np.float64)
    invstd = 1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps)
    scale = (invstd * weight)[None, :, None, None]
    y = (x.astype(np.float64) - mean[None, :, None, None]) * scale + \
        np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return relu_forward(y.astype(x.dtype)), mean.astype(x.dtype), invstd.astype(x.dtype)


def conv2d_batchnorm_forward(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups, weight, bias,
                             running_mean, running_var, momentum, eps, relu=False):
    """Training-mode batch norm of a convolution's output, then the ReLU where relu: the
    convolution (conv2d_forward, no bias) and batchnorm_forward (batchnorm_relu_forward,
    training) of its output, one op.

    -> (out, y, mean, invstd): out the convolution's output (N, OC, OH, OW), batch norm's
    input, which its backward reads; y, mean and invstd as batch norm returns them; the
    running statistics updated in place. Every argument is checked before anything runs.
    A fast layer may compute the statistics as it writes the output (cpu.py does).
    """
    checks.conv2d_batchnorm_forward_args(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups,
                                         weight, bias, running_mean, running_var)
    out = conv2d_forward(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups)
    if relu:
        y, mean, invstd = batchnorm_relu_forward(out, weight, bias, running_mean, running_var,
                                                 momentum, eps, True)
    else:
        y, mean, invstd = batchnorm_forward(out, weight, bias, running_mean, running_var,
                                            momentum, eps)
    return out, y, mean, invstd


def batchnorm_relu_backward(grad_out, y, x, weight, mean, invstd, training=True):
    """The gradient of batchnorm_relu_forward, the ReLU's mask read from its output y.

    grad_out, y and x (N, C, H, W), weight, mean, invstd (C,) as batchnorm_relu_forward
    returned them -> (grad_x, grad_weight, grad_bias). With g = grad_out * 1[not y <= 0]
    (relu_backward) and xhat = (x - mean)*invstd: grad_bias = sum(g), grad_weight =
    sum(g*xhat) (sums over 0, 2, 3); grad_x is batchnorm_backward's of g in training, and
    g*weight*invstd in evaluation (fixed statistics).
    """
    checks.batchnorm_relu_backward_args(grad_out, y, x, weight, mean, invstd, training)
    g = relu_backward(grad_out, y)
    if training:
        return batchnorm_backward(g, x, weight, mean, invstd)

    def per_channel(v):
        return np.asarray(v, dtype=np.float64)[None, :, None, None]

    g64 = g.astype(np.float64)
    xhat = (x.astype(np.float64) - per_channel(mean)) * per_channel(invstd)
    grad_x = g64 * per_channel(np.asarray(weight, dtype=np.float64) * invstd)
    dtype = x.dtype
    return (grad_x.astype(dtype), (g64 * xhat).sum(axis=(0, 2, 3)).astype(dtype),
            g64.sum(axis=(0, 2, 3)).astype(dtype))


def channel_affine(x, scale, shift):
    """y = x * scale + shift along axis 1 of x (N, C, ...), scale and shift (C,): the
    product rounded to x's dtype, then the sum (no fused multiply-add). Batch norm in
    evaluation, its statistics folded into scale and shift."""
    checks.channel_affine_args(x, scale, shift)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = x * scale.reshape(shape)
    y += shift.reshape(shape)
    return y


def matmul(a, b):
    """a @ b, the array library's own."""
    return a @ b
