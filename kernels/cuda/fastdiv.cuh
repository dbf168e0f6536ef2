// Division by a divisor known only at run time, without a divide instruction.
//
// A GPU has no integer divide unit: `n / d` on runtime values is a subroutine of about
// twenty instructions, and a kernel that splits a flat index into (n, c, h, w) pays it
// several times per element. Division by an invariant d is a multiplication instead
// (Granlund and Montgomery, "Division by invariant integers using multiplication", 1994;
// the form PyTorch's IntDivider uses): the host computes once per launch
//     shift = ceil(log2(d)),  magic = floor(2^32 * (2^shift - d) / d) + 1
// (kernels/cuda.py, magic_divisor) and passes both as kernel arguments; then for every
// 0 <= n < 2^31 (so that the 32-bit sum below cannot overflow)
//     n / d == (umulhi(n, magic) + n) >> shift,
// two instructions. umulhi is the high 32 bits of the 64-bit product.
// Files that need it say #include "fastdiv.cuh"; kernels/cuda.py pastes this text in.

__device__ __forceinline__ int div_magic(int n, unsigned magic, int shift) {
    return (int)((__umulhi((unsigned)n, magic) + (unsigned)n) >> shift);
}
