// Fused multi-tensor optimizer steps (torch's fused=True): one launch updates every tensor
// of a parameter group of one dtype.
//
// The tensors are not copied into one buffer: the launcher (kernels/fused_optim.py) passes
// a table of their device addresses, `tensors`, row-major (lists, n): row 0 the parameters,
// row 1 the gradients, then the state (SGD: momentum buffers; Adam: exp_avg, exp_avg_sq,
// max_exp_avg_sq), tensor t of row r at tensors[r * n + t]. Each tensor is cut into chunks
// of at most `chunk` elements, listed in `chunks` as triples (tensor, begin, end); an empty
// tensor has no chunk, so no block ever looks at it.
//
// Grid mapping: block b takes chunks b, b + gridDim.x, ... (a grid-stride loop over the
// chunk table), and its threads stride through the chunk's elements by blockDim.x. Nothing
// is divided: the chunk table already holds what a flat index would have to be split into.
// The scalars arrive in the element type, precomputed on the host as the per-tensor
// NumPy update computes them (1 - dampening, 1 - lr * weight_decay, lr / (1 - beta1^t),
// sqrt(1 - beta2^t)), so both paths round the same numbers.

// Chunk c of the table: its tensor, and the elements [begin, begin + len) of that tensor.
struct Chunk {
    int t;
    long long begin;
    int len;
};

__device__ __forceinline__ Chunk chunk_at(const long long* chunks, int c) {
    long long begin = chunks[3 * c + 1];
    return Chunk{(int)chunks[3 * c], begin, (int)(chunks[3 * c + 2] - begin)};
}

template <typename T>
__device__ __forceinline__ T* tensor_at(const long long* tensors, int row, int n, int t) {
    return reinterpret_cast<T*>(tensors[row * n + t]);
}

// SGD with momentum, dampening, Nesterov, weight decay and maximize (torch.optim.SGD).
// fresh[t] != 0: tensor t's momentum buffer was just made, and starts as the step d itself.
template <typename T>
__global__ void sgd_fused(const long long* tensors, const long long* chunks, const int* fresh,
                          int n, int n_chunks, T lr, T weight_decay, T momentum,
                          T one_minus_dampening, int nesterov, int maximize) {
    for (int c = blockIdx.x; c < n_chunks; c += gridDim.x) {
        Chunk ch = chunk_at(chunks, c);
        int t = ch.t, len = ch.len;
        long long begin = ch.begin;
        T* p = tensor_at<T>(tensors, 0, n, t) + begin;
        const T* g = tensor_at<T>(tensors, 1, n, t) + begin;
        T* buf = momentum != T(0) ? tensor_at<T>(tensors, 2, n, t) + begin : nullptr;
        bool first = fresh[t] != 0;
        for (int k = threadIdx.x; k < len; k += blockDim.x) {
            T d = maximize ? -g[k] : g[k];
            if (weight_decay != T(0)) d = d + weight_decay * p[k];
            if (buf != nullptr) {
                T b = first ? d : buf[k] * momentum + one_minus_dampening * d;
                buf[k] = b;
                d = nesterov ? d + momentum * b : b;
            }
            p[k] = p[k] - lr * d;
        }
    }
}

// max(a, b) that passes a NaN from either side through, as numpy.maximum.
template <typename T>
__device__ __forceinline__ T max_nan(T a, T b) {
    return (isnan(a) || a >= b) ? a : b;
}

// Adam and AdamW (torch.optim.Adam, decoupled = AdamW's weight decay). corrections holds,
// for tensor t, lr / (1 - beta1^step) at 2t and sqrt(1 - beta2^step) at 2t + 1 (each
// tensor counts its own steps). decay = 1 - lr * weight_decay (AdamW).
template <typename T>
__global__ void adam_fused(const long long* tensors, const long long* chunks,
                           const T* corrections, int n, int n_chunks, T one_minus_beta1,
                           T beta2, T one_minus_beta2, T weight_decay, T decay, T eps,
                           int amsgrad, int maximize, int decoupled) {
    for (int c = blockIdx.x; c < n_chunks; c += gridDim.x) {
        Chunk ch = chunk_at(chunks, c);
        int t = ch.t, len = ch.len;
        long long begin = ch.begin;
        T* p = tensor_at<T>(tensors, 0, n, t) + begin;
        const T* g = tensor_at<T>(tensors, 1, n, t) + begin;
        T* m = tensor_at<T>(tensors, 2, n, t) + begin;
        T* v = tensor_at<T>(tensors, 3, n, t) + begin;
        T* vmax = amsgrad ? tensor_at<T>(tensors, 4, n, t) + begin : nullptr;
        T step_size = corrections[2 * t], bias2_sqrt = corrections[2 * t + 1];
        for (int k = threadIdx.x; k < len; k += blockDim.x) {
            T grad = maximize ? -g[k] : g[k];
            T x = p[k];
            if (weight_decay != T(0)) {
                if (decoupled) x = x * decay;
                else grad = grad + weight_decay * x;
            }
            T mk = m[k] + (grad - m[k]) * one_minus_beta1;
            T vk = v[k] * beta2 + one_minus_beta2 * grad * grad;
            m[k] = mk;
            v[k] = vk;
            if (vmax != nullptr) {
                vk = max_nan(vmax[k], vk);
                vmax[k] = vk;
            }
            T denom = sqrt(vk) / bias2_sqrt + eps;
            p[k] = x - step_size * (mk / denom);
        }
    }
}
