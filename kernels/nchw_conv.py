"""2-D convolution for the CUDA layer as batched GEMMs that read and write NCHW.

kernels/gemm_conv.py (the textbook route, reference.py's) puts the whole batch side by side
in one column matrix (C*kh*kw, N*OH*OW), so its GEMM writes (OC, N*OH*OW), channels first:
the output needs a transpose back to NCHW, and grad_out one to channels first. Here the
columns are kept per image instead, and the GEMMs are batched over the images, so that
the GEMM's result is already NCHW. With K = C/groups*kh*kw, P = OH*OW, w2 (OC, K):

    forward      cols3 = im2col(x)  (N, C*kh*kw, P), per image     (im2col.cu, one kernel)
                 out   = w2 @ cols3 (N, OC, P) = NCHW              (one batched GEMM)
    input grad   g3    = grad_out   (N, OC, P), a view of NCHW
                 grad_cols3 = w2^T @ g3 (N, C*kh*kw, P)            (one batched GEMM)
                 grad_x     = col2im(grad_cols3), into NCHW        (im2col.cu's col2im)
    1x1 layers   no im2col and no col2im (a 1x1 unpadded window's columns are the pixels it
                 reads): stride 1, out = w2 @ x.reshape(N, C, H*W) and grad_x = w2^T @ g3,
                 no kernel at all; stride s > 1, xs = x[:, :, ::s, ::s] is copied once (the
                 subsample only), and grad_x is zeros with w2^T @ g3 scattered into every
                 s-th pixel. The dilation of a 1x1 window does not matter (one tap).

A batched GEMM is xp.matmul with a 2-D weight against a 3-D batch. On CuPy this is one
cuBLAS call over the batch, but the weight is broadcast (batch stride 0), which CuPy 14
runs as cublas<t>gemmBatched on arrays of matrix pointers that it fills first with three
small kernels (its matmul takes gemmStridedBatched only when both operands have the same
batch); a transposed 3-D operand is first copied to C order. So w2^T is copied once (a
weight-sized copy) and nothing batch-sized is ever transposed. Groups stay on this path:
the weight (groups, OC/groups, K) against the columns seen as (N, groups, K, P), one
matmul over the (image, group) pairs, still writing NCHW.

The columns of a batch can be large (the stem of resnet50 at batch 64: 472 MB), so they
are made and consumed in chunks of images whose columns fit COLS_BUDGET bytes (one chunk
for every resnet50 layer at batch 64; the buffer of a chunk is reused by the next).

The weight gradient, grad_w2[o, k] = sum over n, p of g[n, o, p] * cols[n, k, p], sums
over images and pixels together, and in NCHW the pixels of an image are contiguous but
the images are OC*P apart: it is not one GEMM over g as it lies. The options, for a layer
with |g| = N*OC*P, |cols| = N*C*kh*kw*P and |w| = OC*K values:

    A  one GEMM over channels-first operands (taken by every layer with im2col): g2 = g
       copied to (OC, N*P) (2|g| moved), the columns made by im2col straight in the
       batch-wide layout (C*kh*kw, N*P) (the same kernel, other strides: no copy of the
       columns), then the 2-D GEMM g2 @ cols^T (|g| + |cols| + |w|), cols^T a free
       transpose flag in cuBLAS. Extra memory: |g|, and the columns of one chunk; with
       several chunks, each chunk's GEMM writes a partial added into grad_w2 (3|w| more
       per chunk). A 1x1 layer's columns are x or its subsample xs, copied channels
       first (2|xs|).
    B  batched GEMMs into per-image partials, then a sum: partial[n] = g[n] @ cols[n]^T.
       CuPy copies a transposed 3-D operand to C order, so one operand is first copied
       with its pixels first, (N, P, rows), and the GEMM's operands then share one batch:
       gemmStridedBatched, 1 launch. The partials take N*|w| memory (chunked to fit
       COLS_BUDGET) and 2N|w| traffic to write and sum. With im2col the copy is of the
       columns (2|cols|, nine times A's 2|g| for a 3x3 layer keeping its channels): A
       always wins. A 1x1 layer copies the smaller of x and g (a strided layer: its
       subsample, which needs a copy anyway) instead of both, so B moves
       2 min(|xs|, |g|) + 2N|w| against A's 2|xs| + 2|g|: less wherever the images have
       more pixels than the layer has channels (pointwise_partials decides, by these
       bytes; at batch 64 it picks B for resnet50's 1x1 layers on 56x56 and 28x28
       images, A for those on 14x14 and 7x7).
    C  a loop of N GEMMs accumulating into grad_w2: xp.matmul(..., out=) overwrites, it
       does not accumulate (beta = 0), so every image needs a GEMM into a temporary and an
       add (N*3|w| moved, 2N launches), and each GEMM is thin (P columns, 49 at layer4).

Grouped layers take A (B's partials would need a batch over images and groups).
kernels/cuda.py (class Launchers) checks the arguments and passes its im2col and col2im
launchers, which write and read either layout; benchmarks/gpu_model.py models the bytes,
FLOPs and launches of every step above.
"""
from .gemm_conv import channels_first, grouped_matmul

COLS_BUDGET = 1 << 30   # bytes of columns held at once (Launchers.cols_budget)


def is_pointwise(kh, kw, ph, pw):
    """True for a 1x1 unpadded window, any stride or dilation: its columns are pixels of x."""
    return (kh, kw, ph, pw) == (1, 1, 0, 0)


def chunks(n, image_bytes, budget):
    """[(start, stop)] covering range(n) in runs of images whose columns (image_bytes each)
    fit `budget` bytes; at least one image a run."""
    step = n if image_bytes == 0 else max(1, min(n, budget // image_bytes))
    return [(a, min(a + step, n)) for a in range(0, n, max(step, 1))]


def out_size(h, w, window):
    """(OH, OW) of window = (kh, kw, sh, sw, ph, pw, dh, dw) over an H x W plane."""
    kh, kw, sh, sw, ph, pw, dh, dw = window
    return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def subsample(x, sh, sw):
    """The pixels a 1x1 unpadded window with stride (sh, sw) reads, a view of x."""
    return x if (sh, sw) == (1, 1) else x[:, :, ::sh, ::sw]


def batched(xp, w2, b3, groups, out=None):
    """out (m, R, P) = w2 (R, K') @ b3[i] (K, P) for every image i, K' = K/groups: row
    block k of w2 (R/groups rows) multiplies row block k of b3 (K' rows) and writes row
    block k of out. `out`, when given, is a C-contiguous (m, R, P) that receives it."""
    m, k, p = b3.shape
    rows = w2.shape[0]
    if out is None:
        out = xp.empty((m, rows, p), dtype=b3.dtype)
    if groups == 1:
        xp.matmul(w2, b3, out=out)
    else:
        w3 = w2.reshape(groups, rows // groups, w2.shape[1])
        xp.matmul(w3, b3.reshape(m, groups, k // groups, p),
                  out=out.reshape(m, groups, rows // groups, p))
    return out


def transposed_weight(xp, w2, groups):
    """w2 (OC, K') with each group's row block transposed, stacked, C-contiguous:
    (groups*K', OC/groups), so that batched(xp, result, g3, groups) is w2^T @ g3 group by
    group (w2^T itself without groups). One weight-sized copy."""
    g, rows, k = groups, w2.shape[0] // groups, w2.shape[1]
    return xp.ascontiguousarray(w2.reshape(g, rows, k).transpose(0, 2, 1)).reshape(g * k, rows)


def forward(xp, unfold, x, w2, window, groups=1, budget=COLS_BUDGET):
    """out (N, OC, OH, OW) of the convolution of x (N, C, H, W) with w2 (OC, K);
    unfold(x_chunk, cols, window, per_image) is the im2col launcher."""
    kh, kw, sh, sw, ph, pw = window[:6]
    n, c, h, w = x.shape
    oh, ow = out_size(h, w, window)
    oc, p = w2.shape[0], oh * ow
    if is_pointwise(kh, kw, ph, pw):
        xs = xp.ascontiguousarray(subsample(x, sh, sw))      # x itself for stride 1
        return batched(xp, w2, xs.reshape(n, c, p), groups).reshape(n, oc, oh, ow)
    x = xp.ascontiguousarray(x)
    rows = c * kh * kw
    out = xp.empty((n, oc, p), dtype=x.dtype)
    runs = chunks(n, rows * p * x.dtype.itemsize, budget)
    buffer = xp.empty((runs[0][1] if runs else 0, rows, p), dtype=x.dtype)
    for a, b in runs:
        cols3 = buffer[:b - a]
        unfold(x[a:b], cols3, window, True)
        batched(xp, w2, cols3, groups, out=out[a:b])
    return out.reshape(n, oc, oh, ow)


def backward(xp, unfold, fold, grad_out, x, w2, window, need_x, need_w, groups=1,
             budget=COLS_BUDGET):
    """(grad_x, grad_w2) of forward(), each None where not needed; fold(cols, dx, window,
    per_image) is the col2im launcher."""
    g = xp.ascontiguousarray(grad_out, dtype=x.dtype)
    grad_x = grad_w2 = None
    if need_x:
        grad_x = input_grad(xp, fold, g, x, w2, window, groups, budget)
    if need_w:
        grad_w2 = weight_grad(xp, unfold, g, x, w2, window, groups, budget)
    return grad_x, grad_w2


def input_grad(xp, fold, g, x, w2, window, groups, budget):
    """grad_x (N, C, H, W): w2^T @ g3 per image (g3 a view of g), then col2im, or for a
    1x1 layer the product itself (stride 1) or its scatter into every s-th pixel."""
    kh, kw, sh, sw, ph, pw = window[:6]
    n, oc, oh, ow = g.shape
    p = oh * ow
    g3 = g.reshape(n, oc, p)
    w2t = transposed_weight(xp, w2, groups)
    if is_pointwise(kh, kw, ph, pw):
        grad_xs = batched(xp, w2t, g3, groups)
        if (sh, sw) == (1, 1):
            return grad_xs.reshape(x.shape)
        grad_x = xp.zeros(x.shape, dtype=g.dtype)
        grad_x[:, :, ::sh, ::sw] = grad_xs.reshape(n, x.shape[1], oh, ow)
        return grad_x
    rows = w2t.shape[0]
    grad_x = xp.empty(x.shape, dtype=g.dtype)
    runs = chunks(n, rows * p * g.dtype.itemsize, budget)
    buffer = xp.empty((runs[0][1] if runs else 0, rows, p), dtype=g.dtype)
    for a, b in runs:
        grad_cols3 = batched(xp, w2t, g3[a:b], groups, out=buffer[:b - a])
        fold(grad_cols3, grad_x[a:b], window, True)
    return grad_x


def weight_grad(xp, unfold, g, x, w2, window, groups, budget):
    """grad_w2 (OC, K): an ungrouped 1x1 layer by option B of the module docstring where
    it moves fewer bytes; every other layer by option A, over each chunk of images
    grad_out channels first @ the batch-wide columns^T, the chunks' results summed."""
    kh, kw, sh, sw, ph, pw = window[:6]
    n, oc, oh, ow = g.shape
    c, p = x.shape[1], oh * ow
    if is_pointwise(kh, kw, ph, pw):
        strided = (sh, sw) != (1, 1)
        if groups == 1 and pointwise_partials(n, c, oc, p, strided):
            return _pointwise_partials(xp, g, subsample(x, sh, sw), strided, budget)
        cols = channels_first(xp, subsample(x, sh, sw))       # one copy, (C, N*P)
        return _weight_gemm(xp, channels_first(xp, g), cols, groups)
    x = xp.ascontiguousarray(x)
    rows = c * kh * kw
    runs = chunks(n, rows * p * x.dtype.itemsize, budget)
    buffer = xp.empty(rows * (runs[0][1] if runs else 0) * p, dtype=x.dtype)
    grad_w2 = None
    for a, b in runs:
        cols = buffer[:rows * (b - a) * p].reshape(rows, (b - a) * p)
        unfold(x[a:b], cols, window, False)
        part = _weight_gemm(xp, channels_first(xp, g[a:b]), cols, groups)
        if grad_w2 is None:
            grad_w2 = part
        else:
            grad_w2 += part
    if grad_w2 is None:                                      # an empty batch
        grad_w2 = xp.zeros(w2.shape, dtype=x.dtype)
    return grad_w2


def pointwise_partials(n, c, oc, p, strided):
    """Whether option B moves fewer bytes than A for an ungrouped 1x1 layer (N images, C
    in, OC out, P output pixels). Both make one copy of the subsample xs (strided) or of
    x or g, whichever is smaller (stride 1); A also copies g channels first (2 |g|), B
    writes and sums N weight-sized partials (2 N |w|)."""
    xs, g, w = n * c * p, n * oc * p, oc * c
    a = 2 * xs + 2 * g
    b = (2 * xs if strided else 2 * min(xs, g)) + 2 * n * w
    return b < a


def _pointwise_partials(xp, g, xs, strided, budget):
    """grad_w2 (OC, C) of a 1x1 layer by option B: per image g[n] @ xs[n]^T, one batched
    GEMM over same-batch operands (gemmStridedBatched on CuPy) after one copy that puts
    one operand's pixels first (xs's where it is a strided subsample, which needs a copy
    anyway, or is the smaller; else g's); the partials summed, over chunks of images
    whose partials fit `budget` bytes."""
    n, oc, oh, ow = g.shape
    c, p = xs.shape[1], oh * ow
    grad_w2 = xp.zeros((oc, c), dtype=g.dtype)
    for a, b in chunks(n, oc * c * g.dtype.itemsize, budget):
        m, g3 = b - a, g[a:b].reshape(b - a, oc, p)
        if strided or c <= oc:     # xs with its pixels first, (m, P, C)
            xt = xp.ascontiguousarray(xs[a:b].transpose(0, 2, 3, 1)).reshape(m, p, c)
            grad_w2 += xp.matmul(g3, xt).sum(axis=0)
        else:                      # g with its pixels first, (m, P, OC); x as it lies
            gt = xp.ascontiguousarray(g3.transpose(0, 2, 1))
            xs3 = xp.ascontiguousarray(xs[a:b]).reshape(m, c, p)
            grad_w2 += xp.matmul(xs3, gt).sum(axis=0).T
    return grad_w2


def _weight_gemm(xp, g2, cols, groups):
    """g2 (OC, M) @ cols (K, M)^T group by group: the 2-D GEMM (cols^T a transpose flag,
    no copy) without groups, gemm_conv.grouped_matmul's batched one with them (where CuPy
    copies the transposed columns to C order first)."""
    if groups == 1:
        return xp.matmul(g2, cols.T)
    return grouped_matmul(xp, g2, cols, groups, transpose_b=True)
