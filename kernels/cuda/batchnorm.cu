// Training-mode batch norm over the axes (0, 2, 3) of an NCHW tensor: statistics and
// backward sums with one thread block per channel, the elementwise parts with one thread
// per element.
//
// Formulations:
// - Statistics in two passes over the channel, mean first, then the mean of (x - mean)^2.
//   The one-pass E[x^2] - E[x]^2 cancels catastrophically when |mean| >> std; the second
//   pass rereads a channel that is mostly still in L2 and is cheap next to the convolution.
//   Partial sums are accumulated in double for float and double inputs alike: a channel
//   holds N*H*W values (hundreds of thousands for ImageNet shapes), too many for a float
//   accumulator, and double keeps the code one path (Welford in float would also work,
//   but its merge step makes the reduction much harder to read).
// - A block sum is two steps: each warp adds its 32 values with shuffles (no shared memory,
//   no barrier), then warp 0 adds the per-warp partials from shared memory.
//   blockDim.x must be a multiple of 32, at most 1024.
// - The per-channel results are written in double; the launcher derives invstd from them
//   and casts to the input's dtype.

// Sum v over the block; every thread returns the total. partial: __shared__ [32].
template <typename A>
__device__ A block_sum(A v, A* partial) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    for (int offset = 16; offset > 0; offset /= 2) {
        v += __shfl_down_sync(0xffffffffu, v, offset);   // lane 0 ends with the warp's sum
    }
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? partial[lane] : A(0);
        for (int offset = 16; offset > 0; offset /= 2) {
            v += __shfl_down_sync(0xffffffffu, v, offset);
        }
        if (lane == 0) partial[0] = v;
    }
    __syncthreads();
    A total = partial[0];
    __syncthreads();                                      // partial may be reused after this
    return total;
}

// Address of the k-th of the m = N*HW values of channel c.
__device__ __forceinline__ long long channel_at(long long k, int c, int C, int HW) {
    return (k / HW * C + c) * HW + k % HW;
}

// mean[c] and biased var[c] of each channel. Grid: blocks stride over the channels.
template <typename T>
__global__ void batchnorm_stats(const T* x, double* mean, double* var, int N, int C, int HW) {
    __shared__ double partial[32];
    long long m = (long long)N * HW;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        double s = 0.0;
        for (long long k = threadIdx.x; k < m; k += blockDim.x) {
            s += (double)x[channel_at(k, c, C, HW)];
        }
        double mu = block_sum(s, partial) / (double)m;
        double q = 0.0;
        for (long long k = threadIdx.x; k < m; k += blockDim.x) {
            double d = (double)x[channel_at(k, c, C, HW)] - mu;
            q += d * d;
        }
        double v = block_sum(q, partial) / (double)m;
        if (threadIdx.x == 0) {
            mean[c] = mu;
            var[c] = v;
        }
    }
}

// y = (x - mean) * invstd * weight + bias, one thread per element.
template <typename T>
__global__ void batchnorm_apply(const T* x, const T* mean, const T* invstd, const T* weight,
                                const T* bias, T* y, int N, int C, int HW) {
    long long total = (long long)N * C * HW;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += stride) {
        int c = (int)(k / HW % C);
        y[k] = (x[k] - mean[c]) * invstd[c] * weight[c] + bias[c];
    }
}

// sum_g[c] = sum(grad_out), sum_gxhat[c] = sum(grad_out * xhat) per channel, in double.
template <typename T>
__global__ void batchnorm_backward_reduce(const T* grad_out, const T* x, const T* mean,
                                          const T* invstd, double* sum_g, double* sum_gxhat,
                                          int N, int C, int HW) {
    __shared__ double partial[32];
    long long m = (long long)N * HW;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        double mu = (double)mean[c], is = (double)invstd[c];
        double sg = 0.0, sgx = 0.0;
        for (long long k = threadIdx.x; k < m; k += blockDim.x) {
            long long a = channel_at(k, c, C, HW);
            double g = (double)grad_out[a];
            sg += g;
            sgx += g * ((double)x[a] - mu) * is;
        }
        sg = block_sum(sg, partial);
        sgx = block_sum(sgx, partial);
        if (threadIdx.x == 0) {
            sum_g[c] = sg;
            sum_gxhat[c] = sgx;
        }
    }
}

// d bn/dx: grad_x = weight*invstd/m * (m*g - sum_g - xhat*sum_gxhat), one thread per element.
template <typename T>
__global__ void batchnorm_backward_apply(const T* grad_out, const T* x, const T* mean,
                                         const T* invstd, const T* weight, const double* sum_g,
                                         const double* sum_gxhat, T* grad_x, int N, int C, int HW) {
    long long total = (long long)N * C * HW;
    T m = T((long long)N * HW);
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += stride) {
        int c = (int)(k / HW % C);
        T xhat = (x[k] - mean[c]) * invstd[c];
        T scale = weight[c] * invstd[c] / m;
        grad_x[k] = scale * (m * grad_out[k] - T(sum_g[c]) - xhat * T(sum_gxhat[c]));
    }
}

// ---- batch norm + ReLU, fused (training statistics from batchnorm_stats above) ----------
// The ReLU's mask is read from the output y (y <= 0 where the ReLU cut), so the backward
// needs no second saved tensor; a NaN in y lets its gradient through, as relu_backward.

// y = max((x - mean) * invstd * weight + bias, 0), one thread per element (a NaN passes).
template <typename T>
__global__ void batchnorm_relu_apply(const T* x, const T* mean, const T* invstd,
                                     const T* weight, const T* bias, T* y, int N, int C, int HW) {
    long long total = (long long)N * C * HW;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += stride) {
        int c = (int)(k / HW % C);
        T v = (x[k] - mean[c]) * invstd[c] * weight[c] + bias[c];
        y[k] = v < T(0) ? T(0) : v;
    }
}

// sum_g[c] = sum(g), sum_gxhat[c] = sum(g * xhat) per channel, in double, where
// g = grad_out masked by y (0 where y <= 0).
template <typename T>
__global__ void batchnorm_relu_backward_reduce(const T* grad_out, const T* y, const T* x,
                                               const T* mean, const T* invstd, double* sum_g,
                                               double* sum_gxhat, int N, int C, int HW) {
    __shared__ double partial[32];
    long long m = (long long)N * HW;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        double mu = (double)mean[c], is = (double)invstd[c];
        double sg = 0.0, sgx = 0.0;
        for (long long k = threadIdx.x; k < m; k += blockDim.x) {
            long long a = channel_at(k, c, C, HW);
            double g = y[a] <= T(0) ? 0.0 : (double)grad_out[a];
            sg += g;
            sgx += g * ((double)x[a] - mu) * is;
        }
        sg = block_sum(sg, partial);
        sgx = block_sum(sgx, partial);
        if (threadIdx.x == 0) {
            sum_g[c] = sg;
            sum_gxhat[c] = sgx;
        }
    }
}

// d relu(bn)/dx, one thread per element, g the masked grad_out: with batch statistics
// grad_x = weight*invstd/m * (m*g - sum_g - xhat*sum_gxhat); with fixed (running)
// statistics, batch_stats == 0, grad_x = g * weight * invstd.
template <typename T>
__global__ void batchnorm_relu_backward_apply(const T* grad_out, const T* y, const T* x,
                                              const T* mean, const T* invstd, const T* weight,
                                              const double* sum_g, const double* sum_gxhat,
                                              T* grad_x, int N, int C, int HW, int batch_stats) {
    long long total = (long long)N * C * HW;
    T m = T((long long)N * HW);
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += stride) {
        int c = (int)(k / HW % C);
        T g = y[k] <= T(0) ? T(0) : grad_out[k];
        if (batch_stats) {
            T xhat = (x[k] - mean[c]) * invstd[c];
            T scale = weight[c] * invstd[c] / m;
            grad_x[k] = scale * (m * g - T(sum_g[c]) - xhat * T(sum_gxhat[c]));
        } else {
            grad_x[k] = g * weight[c] * invstd[c];
        }
    }
}
