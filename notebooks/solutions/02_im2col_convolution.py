"""Solutions to the exercises of notebook 02. Each `# %% exercise N` section replaces the
cell tagged exercise-N; tests/test_notebooks.py runs them through the notebook's checks."""

# %% exercise 1
# OH = OW = (32 + 4 - 5) // 2 + 1 = 16, so cols is (16*25, 16*16): 25 * 256 / 1024
predicted_cols_ratio = 16 * 25 * 16 * 16 / (16 * 32 * 32)      # 6.25

# %% exercise 2
def conv2d_gemm(x, w, stride, pad):
    n, oc, kh, kw = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    oh = (x.shape[2] + 2 * pad - kh) // stride + 1
    ow = (x.shape[3] + 2 * pad - kw) // stride + 1
    cols = reference.im2col(x, kh, kw, stride, stride, pad, pad)    # (C*kh*kw, N*OH*OW)
    out = w.reshape(oc, -1) @ cols                                  # (OC, N*OH*OW)
    return out.reshape(oc, n, oh, ow).transpose(1, 0, 2, 3)
