// Max pooling forward and backward for NCHW images (floor mode, padding acts as -inf).
//
// idx holds the flat index h*W + w of the chosen input element within its (n, c) plane.
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

template <typename T>
__global__ void maxpool_forward(const T* x, T* y, long long* idx, int N, int C, int H, int W,
                                int kh, int kw, int sh, int sw, int ph, int pw, int OH, int OW) {
    long long total = (long long)N * C * OH * OW;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += stride) {
        int ow = (int)(k % OW);
        int oh = (int)((k / OW) % OH);
        long long plane = k / ((long long)OW * OH);      // n * C + c
        const T* img = x + plane * H * W;
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
        y[k] = best;
        idx[k] = arg;
    }
}

template <typename T>
__global__ void maxpool_backward(const T* grad_out, const long long* idx, T* grad_x,
                                 int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                 int ph, int pw, int OH, int OW) {
    long long total = (long long)N * C * H * W;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += stride) {
        int w = (int)(k % W);
        int h = (int)((k / W) % H);
        long long plane = k / ((long long)W * H);
        long long self = (long long)h * W + w;
        long long first = plane * OH * OW;                // this plane's outputs
        T sum = T(0);
        for (int i = 0; i < kh; ++i) {
            int t = h + ph - i;                           // = oh * sh if window row oh has h at i
            if (t < 0 || t % sh != 0 || t / sh >= OH) continue;
            int oh = t / sh;
            for (int j = 0; j < kw; ++j) {
                int u = w + pw - j;
                if (u < 0 || u % sw != 0 || u / sw >= OW) continue;
                long long o = first + (long long)oh * OW + u / sw;
                if (idx[o] == self) sum += grad_out[o];
            }
        }
        grad_x[k] = sum;
    }
}
