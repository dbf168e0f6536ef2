// im2col and its adjoint col2im for NCHW images.
//
// cols has shape (C*kh*kw, N*OH*OW): row r = (c*kh + i)*kw + j, column q = n*OH*OW + p with
// p = oh*OW + ow, and cols[r, q] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw], or 0 where
// that falls in the padding; (dh, dw) is the dilation, the distance between window taps. The images of the batch sit side by side along the columns, so a
// convolution is one GEMM, weight (OC, C*kh*kw) @ cols, for the whole batch.
//
// Formulations:
// - im2col: one thread per entry of cols (grid-stride loop). Consecutive threads write
//   consecutive columns q, so the writes are coalesced; each thread does one read.
// - col2im as a gather: one thread per input pixel (n, c, h, w) sums every cols entry that
//   im2col read from that pixel. The window offset i reaches row h from output row
//   oh = (h + ph - i*dh) / sh, if that division is exact and 0 <= oh < OH (same for j, w).
//   Each pixel is written by exactly one thread, so no atomics are needed, the result is
//   deterministic, and the sum runs in a fixed order.

template <typename T>
__global__ void im2col(const T* x, T* cols, int N, int C, int H, int W, int kh, int kw,
                       int sh, int sw, int ph, int pw, int dh, int dw, int OH, int OW) {
    long long L = (long long)OH * OW;             // columns per image
    long long Q = (long long)N * L;               // columns of cols
    long long K = (long long)C * kh * kw;         // rows of cols
    long long total = K * Q;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += stride) {
        long long q = k % Q;
        int r = (int)(k / Q);
        int p = (int)(q % L);
        int n = (int)(q / L);
        int ow = p % OW, oh = p / OW;
        int j = r % kw, i = (r / kw) % kh, c = r / (kw * kh);
        int h = oh * sh - ph + i * dh;
        int w = ow * sw - pw + j * dw;
        bool inside = h >= 0 && h < H && w >= 0 && w < W;
        cols[k] = inside ? x[(((long long)n * C + c) * H + h) * W + w] : T(0);
    }
}

template <typename T>
__global__ void col2im(const T* cols, T* dx, int N, int C, int H, int W, int kh, int kw,
                       int sh, int sw, int ph, int pw, int dh, int dw, int OH, int OW) {
    long long L = (long long)OH * OW;
    long long Q = (long long)N * L;               // columns of cols
    long long total = (long long)N * C * H * W;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += stride) {
        int w = (int)(k % W);
        int h = (int)((k / W) % H);
        int c = (int)((k / ((long long)W * H)) % C);
        int n = (int)(k / ((long long)W * H * C));
        const T* img_cols = cols + (long long)n * L;   // image n's first column
        T sum = T(0);
        for (int i = 0; i < kh; ++i) {
            int t = h + ph - i * dh;              // = oh * sh if row oh's window has h at i
            if (t < 0 || t % sh != 0 || t / sh >= OH) continue;
            int oh = t / sh;
            for (int j = 0; j < kw; ++j) {
                int u = w + pw - j * dw;
                if (u < 0 || u % sw != 0 || u / sw >= OW) continue;
                int ow = u / sw;
                long long r = ((long long)c * kh + i) * kw + j;
                sum += img_cols[r * Q + (long long)oh * OW + ow];
            }
        }
        dx[k] = sum;
    }
}
