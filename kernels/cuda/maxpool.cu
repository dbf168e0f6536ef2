// Max pooling forward and backward for NCHW images (padding acts as -inf).
//
// The window of output (oh, ow) has the taps (oh*sh - ph + i*dh, ow*sw - pw + j*dw),
// i < kh, j < kw (dh, dw: the dilation). OH and OW come from the launcher, floor or ceil
// mode alike (checks.pool_out_size): every window starts inside the input or its left
// padding, and a window only reads the taps inside the input.
// idx holds the flat index h*W + w of the chosen input element within its (n, c) plane.
//
// Launch geometry (kernels/cuda.py, Launchers._launch_planes): a 3-D grid whose thread
// coordinates are the indices, x a column, y a row, z a plane n*C + c, each a grid-stride
// loop; no thread splits a flat index with / or %. The backward's stride divisions are
// multiplications by magic numbers (fastdiv.cuh).
//
// Formulations:
// - forward: one thread per output element walks its window's taps inside the input in
//   row-major order, from the first one (h0, w0) as torch does; only a strictly larger
//   value, or any NaN, takes over, so ties go to the first maximum and the last NaN wins
//   (as torch). Skipping the padding is the same as reading -inf. A window whose taps all
//   miss the input (dilation can jump over it) gives -inf at index h0*W + w0, as torch.
// - backward as a gather: one thread per input pixel visits the few windows that could
//   have chosen it (the same index arithmetic as col2im) and adds grad_out where idx names
//   this pixel. One writer per pixel: no atomics, a deterministic sum, and no zero-fill
//   pass. A window with no input element never names one: its gradient goes nowhere.

#include "fastdiv.cuh"

// -inf of type T: NVRTC has no INFINITY macro, and IEEE division gives it exactly.
template <typename T>
__device__ __forceinline__ T minus_infinity() {
    return -T(1) / T(0);
}

// The first of the taps start, start + step, ..., start + (taps - 1)*step that is >= 0
// (one is, as the padding is at most half the kernel): where torch starts the window's
// walk. A search rather than a formula: that would divide.
__device__ __forceinline__ int first_tap(int start, int step, int taps) {
    for (int i = 0; i < taps; ++i) {
        if (start + i * step >= 0) return start + i * step;
    }
    return start;
}

template <typename T>
__global__ void maxpool_forward(const T* x, T* y, long long* idx, int N, int C, int H, int W,
                                int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                                int OH, int OW) {
    int planes = N * C;
    for (int plane = blockIdx.z * blockDim.z + threadIdx.z; plane < planes;
         plane += gridDim.z * blockDim.z) {
        const T* img = x + (long long)plane * H * W;
        long long first = (long long)plane * OH * OW;         // this plane's outputs
        for (int oh = blockIdx.y * blockDim.y + threadIdx.y; oh < OH;
             oh += gridDim.y * blockDim.y) {
            int top = oh * sh - ph;
            int h0 = first_tap(top, dh, kh);
            for (int ow = blockIdx.x * blockDim.x + threadIdx.x; ow < OW;
                 ow += gridDim.x * blockDim.x) {
                int left = ow * sw - pw;
                T best = minus_infinity<T>();
                long long arg = (long long)h0 * W + first_tap(left, dw, kw);
                for (int i = 0; i < kh; ++i) {        // tap by tap: a loop stepping by dh
                    int h = top + i * dh;             // would divide to count its trips
                    if (h < 0) continue;
                    if (h >= H) break;
                    for (int j = 0; j < kw; ++j) {
                        int w = left + j * dw;
                        if (w < 0) continue;
                        if (w >= W) break;
                        T v = img[(long long)h * W + w];
                        if (v > best || isnan(v)) {         // the last NaN wins, as torch
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
                                 int ph, int pw, int dh, int dw, int OH, int OW,
                                 unsigned sh_magic, int sh_shift, unsigned sw_magic,
                                 int sw_shift) {
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
                    int t = h + ph - i * dh;              // = oh * sh if window row oh has h at i
                    if (t < 0) break;                     // and so for every later i
                    int oh = div_magic(t, sh_magic, sh_shift);
                    if (oh * sh != t || oh >= OH) continue;
                    for (int j = 0; j < kw; ++j) {
                        int u = w + pw - j * dw;
                        if (u < 0) break;
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
