// Max pooling forward and backward for NCHW images (floor mode, padding acts as -inf).
//
// idx holds the flat index h*W + w of the chosen input element within its (n, c) plane.
//
// Launch geometry (kernels/cuda.py, Launchers._launch_planes): a 3-D grid whose thread
// coordinates are the indices, x a column, y a row, z a plane n*C + c, each a grid-stride
// loop; no thread splits a flat index with / or %. The backward's stride divisions are
// multiplications by magic numbers (fastdiv.cuh).
//
// Formulations:
// - forward: one thread per output element walks its kh x kw window in row-major order;
//   only a strictly larger value, or any NaN, takes over, so ties go to the first maximum
//   and the last NaN wins (as torch). The padding is never read: skipping it is the same
//   as reading -inf, because the padding is at most half the kernel and every window
//   holds a real pixel.
// - backward as a gather: one thread per input pixel visits the few windows that could have
//   chosen it (the same index arithmetic as col2im) and adds grad_out where idx names this
//   pixel. One writer per pixel: no atomics, a deterministic sum, and no zero-fill pass.

#include "fastdiv.cuh"

template <typename T>
__global__ void maxpool_forward(const T* x, T* y, long long* idx, int N, int C, int H, int W,
                                int kh, int kw, int sh, int sw, int ph, int pw, int OH, int OW) {
    int planes = N * C;
    for (int plane = blockIdx.z * blockDim.z + threadIdx.z; plane < planes;
         plane += gridDim.z * blockDim.z) {
        const T* img = x + (long long)plane * H * W;
        long long first = (long long)plane * OH * OW;         // this plane's outputs
        for (int oh = blockIdx.y * blockDim.y + threadIdx.y; oh < OH;
             oh += gridDim.y * blockDim.y) {
            for (int ow = blockIdx.x * blockDim.x + threadIdx.x; ow < OW;
                 ow += gridDim.x * blockDim.x) {
                T best = T(0);
                long long arg = -1;                             // -1: nothing seen yet
                for (int i = 0; i < kh; ++i) {
                    int h = oh * sh - ph + i;
                    if (h < 0 || h >= H) continue;
                    for (int j = 0; j < kw; ++j) {
                        int w = ow * sw - pw + j;
                        if (w < 0 || w >= W) continue;
                        T v = img[(long long)h * W + w];
                        if (arg < 0 || v > best || isnan(v)) {     // the last NaN wins, as torch
                            best = v;
                            arg = (long long)h * W + w;
                        }
                    }
                }
                long long k = first + (long long)oh * OW + ow;
                y[k] = best;
                idx[k] = arg;
            }
        }
    }
}

template <typename T>
__global__ void maxpool_backward(const T* grad_out, const long long* idx, T* grad_x,
                                 int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                 int ph, int pw, int OH, int OW, unsigned sh_magic, int sh_shift,
                                 unsigned sw_magic, int sw_shift) {
    int planes = N * C;
    for (int plane = blockIdx.z * blockDim.z + threadIdx.z; plane < planes;
         plane += gridDim.z * blockDim.z) {
        long long first = (long long)plane * OH * OW;         // this plane's outputs
        T* img = grad_x + (long long)plane * H * W;
        for (int h = blockIdx.y * blockDim.y + threadIdx.y; h < H; h += gridDim.y * blockDim.y) {
            for (int w = blockIdx.x * blockDim.x + threadIdx.x; w < W;
                 w += gridDim.x * blockDim.x) {
                long long self = (long long)h * W + w;
                T sum = T(0);
                for (int i = 0; i < kh; ++i) {
                    int t = h + ph - i;                   // = oh * sh if window row oh has h at i
                    if (t < 0) continue;
                    int oh = div_magic(t, sh_magic, sh_shift);
                    if (oh * sh != t || oh >= OH) continue;
                    for (int j = 0; j < kw; ++j) {
                        int u = w + pw - j;
                        if (u < 0) continue;
                        int ow = div_magic(u, sw_magic, sw_shift);
                        if (ow * sw != u || ow >= OW) continue;
                        long long o = first + (long long)oh * OW + ow;
                        if (idx[o] == self) sum += grad_out[o];
                    }
                }
                img[self] = sum;
            }
        }
    }
}
