"""im2col and col2im on the CPU: the Numba loops behind cpu.im2col, cpu.col2im and the
convolution cores of cpu.py, which unfold a few images at a time (im2col_images).

cols is (C*kh*kw, N*OH*OW): row (c*kh + i)*kw + j holds, for every image and output pixel,
the input pixel that window element (i, j) of channel c reads (zero in the padding).

im2col copies, it does not compute: what costs is a test of the padding at every pixel
and, at stride 2, reading every other pixel. Neither is done here. A stride-s plane is
first cut into its s*s phase planes (_split_phases: rows y = a mod s, columns z = e mod s),
in which window element (i, j) of every output pixel is a plain shift: row oy + si, column
ox + sj of one phase (_window_axis). So each row of cols is a shifted copy of a phase plane
(of the plane itself at stride 1) whose out-of-range part is then zeroed. Every inner loop
runs over range(count) from 0 with its base in a slice, which LLVM vectorises; an index
that might be negative, as in `oy*ow + ox + shift`, brings Python's wraparound test in and
it does not. col2im runs the same steps backwards. Two ways through, with one result, bit
for bit:

  blocks   where a phase plane is exactly as large as the output (ceil(H/sh) = OH and
           ceil(W/sw) = OW: every "same" layer, as resnet's 3x3 layers at stride 1 and 2,
           its 7x7 stem and its 1x1 projections), channel c of m images at a time: the
           phases of their m planes side by side in a block, each row of cols one shifted
           copy of the whole block (m*OH*OW entries), then the entries that the shift took
           from a neighbouring row or image zeroed (_zero_outside). A copy per plane row
           of 7 or 8 entries is too short to vectorise; measured on the cores alone
           (writing into buffers already in use), im2col and col2im ran 1.6-2.9x faster
           this way on resnet20's 8x8 and stride-2 16x16 planes and resnet18's 7x7 ones,
           and about as fast on 56x56 (benchmarks/README.md, "How the CPU layer picks a
           convolution").
  planes   any other geometry: plane by plane (_im2col_plane), row by row.

col2im adds, to each pixel, its entries in the order of (i, j) from zero, on both ways (a
zeroed entry adds +0, which changes no sum that starts from +0).
"""
import numpy as np
from numba import njit, prange


# ---------------------------------------------------------------- by planes

@njit(cache=True)
def _output_hw(h, w, kh, kw, sh, sw, ph, pw, dh, dw):
    """(OH, OW) of a kh x kw window, taps (dh, dw) apart, over an H x W input."""
    return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


@njit(cache=True)
def _window_axis(i, d, p, s, o_size, size):
    """Window element i along one axis (dilation d, padding p, stride s): output o reads
    input o*s + i*d - p = (o + shift)*s + phase, which lies inside for o in [lo, hi)
    (lo == hi: for none). Returns phase, shift, lo, hi."""
    r = i * d - p
    phase, shift = r % s, r // s
    lo = max(0, -shift)
    return phase, shift, lo, max(lo, min(o_size, (size - phase + s - 1) // s - shift))


@njit(cache=True)
def _split_phases(x, b, ch, sh, sw, phases):
    """phases[a, e, yy, zz] = x[b, ch, yy*sh + a, zz*sw + e], for every pixel of the plane:
    its rows a mod sh and columns e mod sw, each (a, e) a plane of its own."""
    h, w = x.shape[2], x.shape[3]
    for a in range(sh):
        for e in range(sw):
            columns = (w - e + sw - 1) // sw
            for yy in range((h - a + sh - 1) // sh):
                src = x[b, ch, yy * sh + a, e:]
                dst = phases[a, e, yy]
                if sw == 1:                  # a plain copy, which vectorises
                    for k in range(columns):
                        dst[k] = src[k]
                else:
                    for k in range(columns):
                        dst[k] = src[k * sw]


@njit(cache=True)
def _window_row(src, pitch, si, sj, y0, y1, x0, x1, oh, ow, dst):
    """dst[oy*ow + ox] = src[(oy + si)*pitch + ox + sj] for oy in [y0, y1), ox in [x0, x1),
    zero elsewhere: one row of cols (OH*OW long) from a plane of row length `pitch`."""
    if y1 <= y0 or x1 <= x0:
        y0 = y1 = 0
    for k in range(y0 * ow):
        dst[k] = 0
    if pitch == ow and y1 > y0:    # one copy of the shifted plane, then the columns that
        d = dst[y0 * ow + x0:]     # it took from the neighbouring rows are zeroed
        s = src[(y0 + si) * pitch + x0 + sj:]
        for k in range((y1 - 1 - y0) * ow + x1 - x0):
            d[k] = s[k]
        for oy in range(y0, y1):
            row = dst[oy * ow:]
            for k in range(x0):
                row[k] = 0
            for k in range(x1, ow):
                row[k] = 0
    else:
        for oy in range(y0, y1):
            row = dst[oy * ow:]
            s = src[(oy + si) * pitch + x0 + sj:]
            for k in range(x0):
                row[k] = 0
            inside = row[x0:]
            for k in range(x1 - x0):
                inside[k] = s[k]
            for k in range(x1, ow):
                row[k] = 0
    rest = dst[y1 * ow:]
    for k in range((oh - y1) * ow):
        rest[k] = 0


@njit(cache=True)
def _im2col_plane(x, b, ch, q, kh, kw, sh, sw, ph, pw, dh, dw, phases, cols):
    """cols[(ch*kh + i)*kw + j, q] for every window element (i, j): channel ch of image b
    at every output pixel (zero in the padding). phases: (sh, sw, ceil(H/sh), ceil(W/sw))
    scratch, unused at stride 1."""
    h, w = x.shape[2], x.shape[3]
    oh, ow = _output_hw(h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    if sh == 1 and sw == 1:
        planes, pitch = x[b, ch].reshape(1, 1, h * w), w
    else:
        _split_phases(x, b, ch, sh, sw, phases)
        planes, pitch = phases.reshape(sh, sw, -1), phases.shape[3]
    for i in range(kh):
        a, si, y0, y1 = _window_axis(i, dh, ph, sh, oh, h)
        for j in range(kw):
            e, sj, x0, x1 = _window_axis(j, dw, pw, sw, ow, w)
            _window_row(planes[a, e], pitch, si, sj, y0, y1, x0, x1, oh, ow,
                        cols[(ch * kh + i) * kw + j, q])


@njit(cache=True)
def _phase_scratch(x, sh, sw):
    """The shape of _im2col_plane's phases for x: (sh, sw, ceil(H/sh), ceil(W/sw)), or
    nothing at stride 1."""
    if sh == 1 and sw == 1:
        return 0, 0, 0, 0
    return sh, sw, (x.shape[2] + sh - 1) // sh, (x.shape[3] + sw - 1) // sw


@njit(cache=True)
def _merge_phases(phases, sh, sw, dx, b, ch):
    """dx[b, ch, yy*sh + a, zz*sw + e] = phases[a, e, yy, zz]: _split_phases undone."""
    h, w = dx.shape[2], dx.shape[3]
    for a in range(sh):
        for e in range(sw):
            columns = (w - e + sw - 1) // sw
            for yy in range((h - a + sh - 1) // sh):
                src = phases[a, e, yy]
                dst = dx[b, ch, yy * sh + a, e:]
                for k in range(columns):
                    dst[k * sw] = src[k]


@njit(cache=True)
def _add_window_row(row, pitch, si, sj, y0, y1, x0, x1, ow, dst):
    """dst[(oy + si)*pitch + ox + sj] += row[oy*ow + ox] for oy in [y0, y1), ox in
    [x0, x1): _window_row's adjoint, on a plane of row length `pitch`."""
    for oy in range(y0, y1):
        d = dst[(oy + si) * pitch + x0 + sj:]
        s = row[oy * ow + x0:]
        for k in range(x1 - x0):
            d[k] += s[k]


@njit(cache=True)
def _col2im_plane(cols, q, b, ch, kh, kw, sh, sw, ph, pw, dh, dw, phases, dx):
    """dx[b, ch] = the sum of the rows (ch*kh + i)*kw + j of cols at q, each entry added
    onto the pixel _im2col_plane read it from (the padding's dropped): the adjoint. The
    entries of a pixel are added in the order of (i, j), from zero."""
    h, w = dx.shape[2], dx.shape[3]
    oh, ow = _output_hw(h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    if sh == 1 and sw == 1:
        planes, pitch = dx[b, ch].reshape(1, 1, h * w), w
    else:
        planes, pitch = phases.reshape(sh, sw, -1), phases.shape[3]
    planes[:] = 0
    for i in range(kh):
        a, si, y0, y1 = _window_axis(i, dh, ph, sh, oh, h)
        for j in range(kw):
            e, sj, x0, x1 = _window_axis(j, dw, pw, sw, ow, w)
            _add_window_row(cols[(ch * kh + i) * kw + j, q], pitch, si, sj, y0, y1, x0, x1,
                            ow, planes[a, e])
    if sh != 1 or sw != 1:
        _merge_phases(phases, sh, sw, dx, b, ch)


# ---------------------------------------------------------------- by blocks of images

@njit(cache=True)
def fits_blocks(h, w, oh, ow, sh, sw):
    """True where every phase plane of an H x W input at stride (sh, sw) is OH x OW."""
    return (h + sh - 1) // sh == oh and (w + sw - 1) // sw == ow


@njit(cache=True)
def _split_block(x, b0, ch, sh, sw, oh, ow, block):
    """block (sh*sw, m*OH*OW): row a*sw + e holds phase (a, e) of channel ch of the images
    b0, ..., b0 + m - 1 side by side, each image's as _split_phases cuts it (at stride 1,
    the planes themselves); what lies past a phase's end is left as it was, and only ever
    read into zeroed entries."""
    phases = block.reshape(sh, sw, block.shape[1] // (oh * ow), oh, ow)
    for q in range(phases.shape[2]):
        _split_phases(x, b0 + q, ch, sh, sw, phases[:, :, q])


@njit(cache=True)
def _merge_block(block, sh, sw, oh, ow, b0, ch, dx):
    """_split_block undone into dx, image by image (_merge_phases)."""
    phases = block.reshape(sh, sw, block.shape[1] // (oh * ow), oh, ow)
    for q in range(phases.shape[2]):
        _merge_phases(phases[:, :, q], sh, sw, dx, b0 + q, ch)


@njit(cache=True)
def _shift_bounds(n, shift):
    """[lo, hi): the k in [0, n) with k + shift in [0, n) too."""
    lo = min(n, max(0, -shift))
    return lo, max(lo, min(n, n - shift))


@njit(cache=True)
def _zero_outside(row, oh, ow, y0, y1, x0, x1):
    """Zero every entry of row (m images of OH*OW) outside rows [y0, y1) and columns
    [x0, x1) of its image: where a window element falls in the padding."""
    p = oh * ow
    for q in range(row.size // p):
        image = row[q * p:(q + 1) * p]
        if y1 <= y0 or x1 <= x0:
            y0 = y1 = 0
        for k in range(y0 * ow):
            image[k] = 0
        for k in range(y1 * ow, p):
            image[k] = 0
        if x0 > 0 or x1 < ow:
            for oy in range(y0, y1):
                line = image[oy * ow:(oy + 1) * ow]
                for k in range(x0):
                    line[k] = 0
                for k in range(x1, ow):
                    line[k] = 0


@njit(cache=True)
def _im2col_block(x, b0, ch, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, block, cols, start):
    """The kh*kw rows of cols (C*kh*kw, ...) that channel ch of images b0, b0 + 1, ...
    feeds, as many images as block (sh*sw, m*OH*OW) holds, from column `start` on."""
    h, w = x.shape[2], x.shape[3]
    n = block.shape[1]
    _split_block(x, b0, ch, sh, sw, oh, ow, block)
    for i in range(kh):
        a, si, y0, y1 = _window_axis(i, dh, ph, sh, oh, h)
        for j in range(kw):
            e, sj, x0, x1 = _window_axis(j, dw, pw, sw, ow, w)
            shift = si * ow + sj
            lo, hi = _shift_bounds(n, shift)
            dst = cols[(ch * kh + i) * kw + j, start:start + n]
            src = block[a * sw + e]
            for k in range(lo):
                dst[k] = 0
            to, frm = dst[lo:hi], src[lo + shift:hi + shift]
            for k in range(hi - lo):
                to[k] = frm[k]
            for k in range(hi, n):
                dst[k] = 0
            _zero_outside(dst, oh, ow, y0, y1, x0, x1)


@njit(cache=True)
def _col2im_block(cols, start, b0, ch, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, block, row,
                  dx):
    """Channel ch of dx for the images b0, b0 + 1, ... (as many as block holds) = the sum
    of the kh*kw rows of cols it fed (from column `start` on), each entry added onto the
    pixel _im2col_block read it from, the padding's dropped: the adjoint. row: scratch of
    block's row length."""
    h, w = dx.shape[2], dx.shape[3]
    n = block.shape[1]
    for r in range(block.shape[0]):
        phase = block[r]
        for k in range(n):
            phase[k] = 0
    for i in range(kh):
        a, si, y0, y1 = _window_axis(i, dh, ph, sh, oh, h)
        for j in range(kw):
            e, sj, x0, x1 = _window_axis(j, dw, pw, sw, ow, w)
            src = cols[(ch * kh + i) * kw + j, start:start + n]
            for k in range(n):
                row[k] = src[k]
            _zero_outside(row, oh, ow, y0, y1, x0, x1)
            shift = si * ow + sj
            lo, hi = _shift_bounds(n, shift)
            to, frm = block[a * sw + e, lo + shift:hi + shift], row[lo:hi]
            for k in range(hi - lo):
                to[k] += frm[k]
    _merge_block(block, sh, sw, oh, ow, b0, ch, dx)


# ---------------------------------------------------------------- whole batch, a few images

@njit(cache=True)
def _block_images(n, oh, ow):
    """Images per block of the whole-batch cores: about 4096 entries a row, at least one."""
    return max(1, min(n, 4096 // max(1, oh * ow)))


@njit(cache=True, parallel=True)
def im2col_core(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols):
    """cols (C*kh*kw, N*OH*OW) = the im2col of x (N, C, H, W), C-contiguous."""
    n, c, h, w = x.shape
    if fits_blocks(h, w, oh, ow, sh, sw):
        m = _block_images(n, oh, ow)
        chunks = (n + m - 1) // m
        for task in prange(c * chunks):
            ch, b0 = task // chunks, (task % chunks) * m
            block = np.empty((sh * sw, min(m, n - b0) * oh * ow), dtype=x.dtype)
            _im2col_block(x, b0, ch, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, block, cols,
                          b0 * oh * ow)
    else:
        cols3 = cols.reshape(cols.shape[0], n, oh * ow)
        for plane in prange(n * c):
            phases = np.empty(_phase_scratch(x, sh, sw), dtype=x.dtype)
            b, ch = plane // c, plane % c
            _im2col_plane(x, b, ch, b, kh, kw, sh, sw, ph, pw, dh, dw, phases, cols3)


@njit(cache=True, parallel=True)
def col2im_core(cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx):
    """dx (N, C, H, W) = the col2im of cols (C*kh*kw, N*OH*OW), C-contiguous."""
    n, c, h, w = dx.shape
    if fits_blocks(h, w, oh, ow, sh, sw):
        m = _block_images(n, oh, ow)
        chunks = (n + m - 1) // m
        for task in prange(c * chunks):      # channel ch of these images: its rows alone
            ch, b0 = task // chunks, (task % chunks) * m
            size = min(m, n - b0) * oh * ow
            block = np.empty((sh * sw, size), dtype=dx.dtype)
            row = np.empty(size, dtype=dx.dtype)
            _col2im_block(cols, b0 * oh * ow, b0, ch, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow,
                          block, row, dx)
    else:
        cols3 = cols.reshape(cols.shape[0], n, oh * ow)
        for plane in prange(n * c):          # plane (b, ch) of dx is only written by its rows
            phases = np.empty(_phase_scratch(dx, sh, sw), dtype=dx.dtype)
            b, ch = plane // c, plane % c
            _col2im_plane(cols3, b, b, ch, kh, kw, sh, sw, ph, pw, dh, dw, phases, dx)


@njit(cache=True)
def im2col_images(x, b0, kh, kw, sh, sw, ph, pw, dh, dw, cols):
    """cols (C*kh*kw, m, OH*OW) = the columns of the m images b0, ..., b0 + m - 1."""
    _, c, h, w = x.shape
    _, m, p = cols.shape
    oh, ow = _output_hw(h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    if fits_blocks(h, w, oh, ow, sh, sw):
        block = np.empty((sh * sw, m * p), dtype=x.dtype)
        cols2 = cols.reshape(cols.shape[0], m * p)
        for ch in range(c):
            _im2col_block(x, b0, ch, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, block, cols2, 0)
        return
    phases = np.empty(_phase_scratch(x, sh, sw), dtype=x.dtype)
    for q in range(m):
        for ch in range(c):
            _im2col_plane(x, b0 + q, ch, q, kh, kw, sh, sw, ph, pw, dh, dw, phases, cols)


@njit(cache=True)
def col2im_images(cols, b0, kh, kw, sh, sw, ph, pw, dh, dw, dx):
    """dx[b0:b0 + m] = the adjoint of im2col_images applied to cols (C*kh*kw, m, OH*OW)."""
    _, c, h, w = dx.shape
    _, m, p = cols.shape
    oh, ow = _output_hw(h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    if fits_blocks(h, w, oh, ow, sh, sw):
        block = np.empty((sh * sw, m * p), dtype=dx.dtype)
        row = np.empty(m * p, dtype=dx.dtype)
        cols2 = cols.reshape(cols.shape[0], m * p)
        for ch in range(c):
            _col2im_block(cols2, 0, b0, ch, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, block,
                          row, dx)
        return
    phases = np.empty(_phase_scratch(dx, sh, sw), dtype=dx.dtype)
    for q in range(m):
        for ch in range(c):
            _col2im_plane(cols, q, b0 + q, ch, kh, kw, sh, sw, ph, pw, dh, dw, phases, dx)
