// ReLU forward and backward: one thread per element, grid-stride loop.
//
// Grid mapping: the launcher picks `grid` blocks of `blockDim.x` threads. Thread t of block b
// starts at element b * blockDim.x + t and strides by the total thread count, so any grid size
// covers any n (a small grid simply takes more turns round the loop).

template <typename T>
__global__ void relu_forward(const T* x, T* y, long long n) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride) {
        y[k] = x[k] < T(0) ? T(0) : x[k];             // a NaN passes through
    }
}

// d relu/dx = 1[x > 0], and 1 at a NaN (as PyTorch: zero exactly where x <= 0)
template <typename T>
__global__ void relu_backward(const T* grad_out, const T* x, T* grad_x, long long n) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride) {
        grad_x[k] = x[k] <= T(0) ? T(0) : grad_out[k];
    }
}
