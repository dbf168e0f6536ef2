// im2col and its adjoint col2im for NCHW images.
//
// Row r = (c*kh + i)*kw + j of cols holds tap (i, j) of channel c, column p = oh*OW + ow of
// image n its output position: cols[r, n, p] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw],
// or 0 where that falls in the padding; (dh, dw) is the dilation, the distance between taps.
// Where that entry lives is given by two strides, so one kernel writes (and reads) either
// layout (kernels/cuda.py, Launchers._unfold and _fold):
//     entry (r, n, p) at  r * Q + n * image_stride + p
//     batch-wide  (C*kh*kw, N*OH*OW): Q = N*OH*OW, image_stride = OH*OW
//                 the images side by side along the columns: one GEMM for the whole batch
//                 (reference.py's layout; the weight gradient's GEMM reads it)
//     per image   (N, C*kh*kw, OH*OW): Q = OH*OW, image_stride = C*kh*kw*OH*OW
//                 one matrix per image: a batched GEMM weight @ cols[n] writes (N, OC, OH*OW),
//                 which is NCHW, with no transpose (kernels/nchw_conv.py)
// Within a row the OH*OW positions of an image are consecutive in both layouts.
//
// Launch geometry (kernels/cuda.py, Launchers._launch_planes): a 3-D grid whose thread
// coordinates are the indices, so no thread splits a flat index with / or %:
//     x = blockIdx.x*blockDim.x + threadIdx.x   a column (ow for im2col, w for col2im)
//     y = blockIdx.y*blockDim.y + threadIdx.y   a row (oh, h)
//     z = blockIdx.z*blockDim.z + threadIdx.z   a plane n*C + c of the image
// each a grid-stride loop, so any grid (gridDim.y and gridDim.z are at most 65535) covers
// any size. The one split left, plane -> (n, c), is a multiplication by a magic number
// (fastdiv.cuh); so are the stride divisions of col2im.
//
// Formulations:
// - im2col: a thread owns one output position (n, c, oh, ow) and writes its kh*kw taps,
//   rows c*kh*kw .. c*kh*kw + kh*kw - 1 of cols, Q apart. Neighbouring threads own
//   neighbouring ow, so every read and every write of a warp is coalesced.
// - col2im as a gather: one thread per input pixel (n, c, h, w) sums every cols entry that
//   im2col read from that pixel. The window offset i reaches row h from output row
//   oh = (h + ph - i*dh) / sh, if that division is exact and 0 <= oh < OH (same for j, w).
//   Each pixel is written by exactly one thread, so no atomics are needed, the result is
//   deterministic, and the sum runs in a fixed order.

#include "fastdiv.cuh"

template <typename T>
__global__ void im2col(const T* x, T* cols, int N, int C, int H, int W, int kh, int kw,
                       int sh, int sw, int ph, int pw, int dh, int dw, int OH, int OW,
                       long long Q, long long image_stride, unsigned c_magic, int c_shift) {
    int planes = N * C;                           // < 2^31 (checked by the launcher)
    for (int plane = blockIdx.z * blockDim.z + threadIdx.z; plane < planes;
         plane += gridDim.z * blockDim.z) {
        int n = div_magic(plane, c_magic, c_shift), c = plane - n * C;
        const T* img = x + (long long)plane * H * W;
        T* first = cols + (long long)c * kh * kw * Q + n * image_stride;  // row c*kh*kw, image n
        for (int oh = blockIdx.y * blockDim.y + threadIdx.y; oh < OH;
             oh += gridDim.y * blockDim.y) {
            for (int ow = blockIdx.x * blockDim.x + threadIdx.x; ow < OW;
                 ow += gridDim.x * blockDim.x) {
                T* out = first + (long long)oh * OW + ow;
                for (int i = 0; i < kh; ++i) {
                    int h = oh * sh - ph + i * dh;
                    for (int j = 0; j < kw; ++j, out += Q) {
                        int w = ow * sw - pw + j * dw;
                        bool inside = h >= 0 && h < H && w >= 0 && w < W;
                        *out = inside ? img[(long long)h * W + w] : T(0);
                    }
                }
            }
        }
    }
}

template <typename T>
__global__ void col2im(const T* cols, T* dx, int N, int C, int H, int W, int kh, int kw,
                       int sh, int sw, int ph, int pw, int dh, int dw, int OH, int OW,
                       long long Q, long long image_stride, unsigned c_magic, int c_shift,
                       unsigned sh_magic, int sh_shift, unsigned sw_magic, int sw_shift) {
    int planes = N * C;
    for (int plane = blockIdx.z * blockDim.z + threadIdx.z; plane < planes;
         plane += gridDim.z * blockDim.z) {
        int n = div_magic(plane, c_magic, c_shift), c = plane - n * C;
        const T* img_cols = cols + n * image_stride;   // image n's first column
        T* img = dx + (long long)plane * H * W;
        for (int h = blockIdx.y * blockDim.y + threadIdx.y; h < H; h += gridDim.y * blockDim.y) {
            for (int w = blockIdx.x * blockDim.x + threadIdx.x; w < W;
                 w += gridDim.x * blockDim.x) {
                T sum = T(0);
                for (int i = 0; i < kh; ++i) {
                    int t = h + ph - i * dh;      // = oh * sh if row oh's window has h at i
                    if (t < 0) continue;
                    int oh = div_magic(t, sh_magic, sh_shift);
                    if (oh * sh != t || oh >= OH) continue;
                    for (int j = 0; j < kw; ++j) {
                        int u = w + pw - j * dw;
                        if (u < 0) continue;
                        int ow = div_magic(u, sw_magic, sw_shift);
                        if (ow * sw != u || ow >= OW) continue;
                        long long r = ((long long)c * kh + i) * kw + j;
                        sum += img_cols[r * Q + (long long)oh * OW + ow];
                    }
                }
                img[(long long)h * W + w] = sum;
            }
        }
    }
}
