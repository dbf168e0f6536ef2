// Training-mode batch norm over the axes (0, 2, 3) of an NCHW tensor, in two stages.
//
// Per-channel statistics and backward sums are parallel two-stage reductions:
// - stage 1 (batchnorm_stats, batchnorm_backward_reduce): grid (S, C); block (s, c) reduces
//   slice s of channel c, the images n = s*blockDim.y + threadIdx.y, stepping by
//   S*blockDim.y, and in each image the pixels threadIdx.x, stepping by blockDim.x, and
//   writes one partial result per (c, s) to partial[c*S + s]. Many blocks per channel keep
//   every SM busy with independent loads, where one block per channel would leave a
//   64-channel layer with 64 blocks. gridDim.y is at most 65535: blocks step over channels.
// - stage 2 (batchnorm_stats_combine, batchnorm_backward_combine): one warp per channel
//   (block (32, blockDim.y)) combines the S partials of its channel.
// - the elementwise kernels use a 3-D grid: x a pixel of the plane, y the channel, z the
//   image, each a grid-stride loop, so no thread divides to find its channel.
//
// Formulations:
// - Statistics as Welford moments (count, mean, M2 = sum of squared deviations from the
//   mean), combined with Chan, Golub and LeVeque's parallel formula:
//     n = na + nb, delta = mb - ma, mean = ma + delta*nb/n, M2 = M2a + M2b + delta^2*na*nb/n.
//   Each thread first sums its own values shifted by the first of them, s1 = sum(x - k)
//   and s2 = sum((x - k)^2), which is exact enough because k is one of the values and
//   cheaper than a division per element; its moments are mean = k + s1/cnt and
//   M2 = s2 - s1^2/cnt. The naive E[x^2] - E[x]^2 cancels catastrophically when
//   |mean| >> std (mean 1e4, std 1 in float32 leaves no correct digit); Welford never
//   subtracts two large numbers.
// - Accumulation in T: float32 for float inputs (as cuDNN), float64 for double inputs.
// - Block reductions: each warp combines its 32 values with shuffles (no shared memory, no
//   barrier), then warp 0 combines the per-warp results from shared memory. The threads of
//   a block are ranked x-fastest; blockDim.x * blockDim.y must be a multiple of 32, at most
//   1024.

// Welford moments of a set of values: count, mean, sum of squared deviations.
template <typename T>
struct Moments {
    T n, mean, m2;
};

// The moments of the union of two disjoint sets (Chan et al.).
template <typename T>
__device__ Moments<T> combine(Moments<T> a, Moments<T> b) {
    T n = a.n + b.n;
    if (n == T(0)) return a;
    T delta = b.mean - a.mean, wb = b.n / n;
    return {n, a.mean + delta * wb, a.m2 + b.m2 + delta * delta * a.n * wb};
}

// Lane 0 ends with the moments of its warp's 32 sets.
template <typename T>
__device__ Moments<T> warp_combine(Moments<T> v) {
    for (int offset = 16; offset > 0; offset /= 2) {
        Moments<T> o = {__shfl_down_sync(0xffffffffu, v.n, offset),
                        __shfl_down_sync(0xffffffffu, v.mean, offset),
                        __shfl_down_sync(0xffffffffu, v.m2, offset)};
        v = combine(v, o);
    }
    return v;
}

template <typename T>
__device__ T warp_sum(T v) {
    for (int offset = 16; offset > 0; offset /= 2) {
        v += __shfl_down_sync(0xffffffffu, v, offset);   // lane 0 ends with the warp's sum
    }
    return v;
}

__device__ __forceinline__ int thread_rank() { return threadIdx.x + blockDim.x * threadIdx.y; }

// The moments of the whole block, valid in thread 0. partial: __shared__ [3][32].
template <typename T>
__device__ Moments<T> block_combine(Moments<T> v, T (*partial)[32]) {
    int rank = thread_rank(), lane = rank % 32, warp = rank / 32;
    int warps = blockDim.x * blockDim.y / 32;
    v = warp_combine(v);
    if (lane == 0) {
        partial[0][warp] = v.n;
        partial[1][warp] = v.mean;
        partial[2][warp] = v.m2;
    }
    __syncthreads();
    if (warp == 0) {
        Moments<T> w = {T(0), T(0), T(0)};
        if (lane < warps) w = {partial[0][lane], partial[1][lane], partial[2][lane]};
        v = warp_combine(w);
    }
    __syncthreads();                                      // partial may be reused after this
    return v;
}

// The sums of a and b over the whole block, valid in thread 0. partial: __shared__ [2][32].
template <typename T>
__device__ void block_sum2(T& a, T& b, T (*partial)[32]) {
    int rank = thread_rank(), lane = rank % 32, warp = rank / 32;
    int warps = blockDim.x * blockDim.y / 32;
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) {
        partial[0][warp] = a;
        partial[1][warp] = b;
    }
    __syncthreads();
    if (warp == 0) {
        a = warp_sum(lane < warps ? partial[0][lane] : T(0));
        b = warp_sum(lane < warps ? partial[1][lane] : T(0));
    }
    __syncthreads();
}

// Stage 1 of the statistics: the Welford moments of slice blockIdx.x of each channel.
template <typename T>
__global__ void batchnorm_stats(const T* x, T* part_n, T* part_mean, T* part_m2,
                                int N, int C, int HW) {
    __shared__ T partial[3][32];
    int S = gridDim.x, s = blockIdx.x;
    for (int c = blockIdx.y; c < C; c += gridDim.y) {
        int count = 0;
        T k = T(0), s1 = T(0), s2 = T(0);
        for (int n = s * blockDim.y + threadIdx.y; n < N; n += S * blockDim.y) {
            const T* plane = x + ((long long)n * C + c) * HW;
            for (int p = threadIdx.x; p < HW; p += blockDim.x) {
                T v = plane[p];
                if (count == 0) k = v;                    // the shift: this thread's first value
                T d = v - k;
                s1 += d;
                s2 += d * d;
                ++count;
            }
        }
        Moments<T> m = {T(0), T(0), T(0)};
        if (count > 0) {
            T cnt = T(count), mean_d = s1 / cnt;
            m = {cnt, k + mean_d, s2 - s1 * mean_d};
        }
        m = block_combine(m, partial);
        if (thread_rank() == 0) {
            long long at = (long long)c * S + s;
            part_n[at] = m.n;
            part_mean[at] = m.mean;
            part_m2[at] = m.m2;
        }
    }
}

// Stage 2: mean[c], biased var[c] and invstd[c] = 1/sqrt(var + eps) from the S partials.
template <typename T>
__global__ void batchnorm_stats_combine(const T* part_n, const T* part_mean, const T* part_m2,
                                        T* mean, T* var, T* invstd, int S, int C, T eps) {
    for (int c = blockIdx.x * blockDim.y + threadIdx.y; c < C; c += gridDim.x * blockDim.y) {
        Moments<T> m = {T(0), T(0), T(0)};
        for (int s = threadIdx.x; s < S; s += 32) {
            long long at = (long long)c * S + s;
            m = combine(m, Moments<T>{part_n[at], part_mean[at], part_m2[at]});
        }
        m = warp_combine(m);
        if (threadIdx.x == 0) {
            T v = m.m2 > T(0) ? m.m2 / m.n : T(0);      // rounding can leave M2 just below 0
            mean[c] = m.mean;
            var[c] = v;
            invstd[c] = T(1) / sqrt(v + eps);
        }
    }
}

// y = (x - mean) * invstd * weight + bias, then with Relu max(y, 0) (a NaN passes); x a
// pixel, y the channel, z the image. The bodies of batchnorm_apply and batchnorm_relu_apply.
template <typename T, bool Relu>
__device__ __forceinline__ void apply_planes(const T* x, const T* mean, const T* invstd,
                                             const T* weight, const T* bias, T* y, int N,
                                             int C, int HW) {
    for (int n = blockIdx.z * blockDim.z + threadIdx.z; n < N; n += gridDim.z * blockDim.z) {
        for (int c = blockIdx.y * blockDim.y + threadIdx.y; c < C; c += gridDim.y * blockDim.y) {
            long long first = ((long long)n * C + c) * HW;
            T mu = mean[c], is = invstd[c], w = weight[c], b = bias[c];
            for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < HW;
                 p += gridDim.x * blockDim.x) {
                T v = (x[first + p] - mu) * is * w + b;
                if constexpr (Relu) {
                    v = v < T(0) ? T(0) : v;
                }
                y[first + p] = v;
            }
        }
    }
}

template <typename T>
__global__ void batchnorm_apply(const T* x, const T* mean, const T* invstd, const T* weight,
                                const T* bias, T* y, int N, int C, int HW) {
    apply_planes<T, false>(x, mean, invstd, weight, bias, y, N, C, HW);
}

// The gradient reaching batch norm's output at i: grad_out[i], or, fused with a ReLU
// (Masked), 0 where the ReLU cut (y[i] <= 0; a NaN in y lets the gradient through). The
// plain kernels pass y = nullptr, which is never read: Masked is a template parameter, so
// each instantiation compiles to its own tight loop without a test per element.
template <typename T, bool Masked>
__device__ __forceinline__ T output_grad(const T* grad_out, const T* y, long long i) {
    if constexpr (Masked) {
        return y[i] <= T(0) ? T(0) : grad_out[i];
    } else {
        return grad_out[i];
    }
}

// Stage 1 of the backward, plain or fused: sum(g) and sum(g * xhat) over slice blockIdx.x
// of each channel, g = output_grad<T, Masked>.
template <typename T, bool Masked>
__device__ void backward_reduce(const T* grad_out, const T* y, const T* x, const T* mean,
                                const T* invstd, T* part_g, T* part_gxhat,
                                int N, int C, int HW) {
    __shared__ T partial[2][32];
    int S = gridDim.x, s = blockIdx.x;
    for (int c = blockIdx.y; c < C; c += gridDim.y) {
        T mu = mean[c], is = invstd[c];
        T sg = T(0), sgx = T(0);
        for (int n = s * blockDim.y + threadIdx.y; n < N; n += S * blockDim.y) {
            long long first = ((long long)n * C + c) * HW;
            for (int p = threadIdx.x; p < HW; p += blockDim.x) {
                T g = output_grad<T, Masked>(grad_out, y, first + p);
                sg += g;
                sgx += g * ((x[first + p] - mu) * is);
            }
        }
        block_sum2(sg, sgx, partial);
        if (thread_rank() == 0) {
            long long at = (long long)c * S + s;
            part_g[at] = sg;
            part_gxhat[at] = sgx;
        }
    }
}

// Stage 1 of the backward: sum(grad_out) and sum(grad_out * xhat) over slice blockIdx.x of
// each channel.
template <typename T>
__global__ void batchnorm_backward_reduce(const T* grad_out, const T* x, const T* mean,
                                          const T* invstd, T* part_g, T* part_gxhat,
                                          int N, int C, int HW) {
    backward_reduce<T, false>(grad_out, nullptr, x, mean, invstd, part_g, part_gxhat, N, C, HW);
}

// Stage 2 of the backward: sum_g[c] and sum_gxhat[c] from the S partials, one warp each.
template <typename T>
__global__ void batchnorm_backward_combine(const T* part_g, const T* part_gxhat, T* sum_g,
                                           T* sum_gxhat, int S, int C) {
    for (int c = blockIdx.x * blockDim.y + threadIdx.y; c < C; c += gridDim.x * blockDim.y) {
        T sg = T(0), sgx = T(0);
        for (int s = threadIdx.x; s < S; s += 32) {
            long long at = (long long)c * S + s;
            sg += part_g[at];
            sgx += part_gxhat[at];
        }
        sg = warp_sum(sg);
        sgx = warp_sum(sgx);
        if (threadIdx.x == 0) {
            sum_g[c] = sg;
            sum_gxhat[c] = sgx;
        }
    }
}

// d bn/dx of the plain or fused backward, g = output_grad<T, Masked>, the grid of apply:
// with batch statistics grad_x = weight*invstd/m * (m*g - sum_g - xhat*sum_gxhat); with
// fixed (running) statistics, batch_stats == 0, grad_x = g * weight * invstd.
template <typename T, bool Masked>
__device__ void backward_apply(const T* grad_out, const T* y, const T* x, const T* mean,
                               const T* invstd, const T* weight, const T* sum_g,
                               const T* sum_gxhat, T* grad_x, int N, int C, int HW,
                               int batch_stats) {
    T m = T((long long)N * HW);
    for (int n = blockIdx.z * blockDim.z + threadIdx.z; n < N; n += gridDim.z * blockDim.z) {
        for (int c = blockIdx.y * blockDim.y + threadIdx.y; c < C; c += gridDim.y * blockDim.y) {
            long long first = ((long long)n * C + c) * HW;
            T mu = mean[c], is = invstd[c], w = weight[c];
            T scale = w * is / m, sg = sum_g[c], sgx = sum_gxhat[c];
            for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < HW;
                 p += gridDim.x * blockDim.x) {
                T g = output_grad<T, Masked>(grad_out, y, first + p);
                if (batch_stats) {
                    T xhat = (x[first + p] - mu) * is;
                    grad_x[first + p] = scale * (m * g - sg - xhat * sgx);
                } else {
                    grad_x[first + p] = g * w * is;
                }
            }
        }
    }
}

// d bn/dx: grad_x = weight*invstd/m * (m*g - sum_g - xhat*sum_gxhat); the grid of apply.
template <typename T>
__global__ void batchnorm_backward_apply(const T* grad_out, const T* x, const T* mean,
                                         const T* invstd, const T* weight, const T* sum_g,
                                         const T* sum_gxhat, T* grad_x, int N, int C, int HW) {
    backward_apply<T, false>(grad_out, nullptr, x, mean, invstd, weight, sum_g, sum_gxhat,
                             grad_x, N, C, HW, 1);
}

// ---- batch norm + ReLU, fused (training statistics from batchnorm_stats above) ----------
// The ReLU's mask is read from the output y (y <= 0 where the ReLU cut), so the backward
// needs no second saved tensor; a NaN in y lets its gradient through, as relu_backward.
// The grids are those of the unfused kernels: apply's 3-D grid, the backward's two stages
// (stage 2 is batchnorm_backward_combine).

// y = max((x - mean) * invstd * weight + bias, 0) (a NaN passes); the grid of apply.
template <typename T>
__global__ void batchnorm_relu_apply(const T* x, const T* mean, const T* invstd,
                                     const T* weight, const T* bias, T* y, int N, int C, int HW) {
    apply_planes<T, true>(x, mean, invstd, weight, bias, y, N, C, HW);
}

// Stage 1 of the fused backward: sum(g) and sum(g * xhat) over slice blockIdx.x of each
// channel, g = grad_out masked by y (0 where y <= 0).
template <typename T>
__global__ void batchnorm_relu_backward_reduce(const T* grad_out, const T* y, const T* x,
                                               const T* mean, const T* invstd, T* part_g,
                                               T* part_gxhat, int N, int C, int HW) {
    backward_reduce<T, true>(grad_out, y, x, mean, invstd, part_g, part_gxhat, N, C, HW);
}

// d relu(bn)/dx, g the masked grad_out, the grid of apply: with batch statistics
// (batch_stats != 0) as batchnorm_backward_apply, else grad_x = g * weight * invstd.
template <typename T>
__global__ void batchnorm_relu_backward_apply(const T* grad_out, const T* y, const T* x,
                                              const T* mean, const T* invstd, const T* weight,
                                              const T* sum_g, const T* sum_gxhat, T* grad_x,
                                              int N, int C, int HW, int batch_stats) {
    backward_apply<T, true>(grad_out, y, x, mean, invstd, weight, sum_g, sum_gxhat, grad_x,
                            N, C, HW, batch_stats);
}
