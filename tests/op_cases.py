"""One table of op cases, shared by the gradient checks (test_ops.py) and the PyTorch
comparisons (test_ops_torch.py).

A case draws its input arrays with hypothesis and calls the op through a namespace `F`
that is either tinyres.nn.functional or a torch equivalent, so the same line of code runs
in both engines. `noncontig` draws some inputs as strided views (transposed, sliced).
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


@dataclass
class OpCase:
    name: str
    draw_inputs: Callable      # (draw, rng) -> (list of float64 arrays, dict of params)
    call: Callable             # (F, *tensors, **params) -> tensor


def array(draw, rng, shape, positive=False):
    """A float64 array of `shape`, sometimes a non-contiguous view of a bigger array."""
    layout = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    shape = tuple(shape)
    if layout == "transposed" and len(shape) >= 2:
        a = rng.standard_normal(shape[::-1]).T
    elif layout == "strided" and len(shape) >= 1:
        big = rng.standard_normal(shape[:-1] + (2 * shape[-1],))
        a = big[..., ::2]
    else:
        a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return a


def small_shape(min_dims=1, max_dims=3, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1,
                            max_side=max_side)


# ----- drawing helpers -----------------------------------------------------------------
def unary(positive=False):
    def draw_inputs(draw, rng):
        return [array(draw, rng, draw(small_shape()), positive)], {}
    return draw_inputs


def binary(positive_b=False):
    def draw_inputs(draw, rng):
        shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3,
                                                        max_side=3)).input_shapes
        return [array(draw, rng, shapes[0]), array(draw, rng, shapes[1], positive_b)], {}
    return draw_inputs


def reduction(draw, rng):
    shape = draw(small_shape())
    dim = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1)))
    return [array(draw, rng, shape)], {"dim": dim, "keepdim": draw(st.booleans())}


def reduction_dim(draw, rng):
    shape = draw(small_shape())
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    return [array(draw, rng, shape)], {"dim": dim, "keepdim": draw(st.booleans())}


def image(draw, rng, max_side=7, min_hw=1):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(min_hw, max_side)), draw(st.integers(min_hw, max_side))
    return array(draw, rng, (n, c, h, w))


def conv_inputs(draw, rng):
    x = image(draw, rng)
    n, c, h, w = x.shape
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    assume(h + 2 * padding[0] >= kh and w + 2 * padding[1] >= kw)
    weight = array(draw, rng, (draw(st.integers(1, 3)), c, kh, kw))
    bias = array(draw, rng, (weight.shape[0],))
    return [x, weight, bias], {"stride": stride, "padding": padding}


def pool_inputs(draw, rng):
    x = image(draw, rng, min_hw=2)
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    assume(x.shape[2] + 2 * padding[0] >= kh and x.shape[3] + 2 * padding[1] >= kw)
    return [x], {"kernel_size": (kh, kw), "stride": stride, "padding": padding}


def maxpool_inputs(draw, rng):
    inputs, params = pool_inputs(draw, rng)
    x = inputs[0]
    # distinct values spaced far apart: finite differences never swap the maximum
    x = (rng.permutation(x.size).reshape(x.shape) * 0.1 + 0.05).astype(np.float64)
    return [x], params


def pool_option_inputs(draw, rng):
    """pool_inputs plus ceil_mode and the kernel spread by a dilation (kept 1 for average
    pooling, which has none), every window holding an input element."""
    inputs, params = pool_inputs(draw, rng)
    (h, w), (kh, kw) = inputs[0].shape[2:], params["kernel_size"]
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    ceil_mode = draw(st.booleans())
    for size, k, s, p, d in zip((h, w), (kh, kw), params["stride"], params["padding"],
                                dilation):
        out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        out -= ceil_mode and (out - 1) * s >= size + p
        starts = np.arange(max(out, 0)) * s - p
        assume(out >= 1 and (np.where(starts < 0, starts % d, starts) < size).all())
    return inputs, dict(params, dilation=dilation, ceil_mode=ceil_mode)


def maxpool_option_inputs(draw, rng):
    inputs, params = pool_option_inputs(draw, rng)
    x = inputs[0]
    x = (rng.permutation(x.size).reshape(x.shape) * 0.1 + 0.05).astype(np.float64)
    return [x], params


def avgpool_option_inputs(draw, rng):
    inputs, params = pool_option_inputs(draw, rng)
    del params["dilation"]
    params["count_include_pad"] = draw(st.booleans())
    params["divisor_override"] = draw(st.sampled_from([None, None, 3, -2]))
    return inputs, params


def batchnorm_inputs(draw, rng):
    ndim = draw(st.sampled_from([2, 3, 4]))
    c = draw(st.integers(1, 3))
    shape = (draw(st.integers(2, 3)), c) + tuple(draw(st.integers(1, 3))
                                                  for _ in range(ndim - 2))
    x = array(draw, rng, shape)
    return [x, array(draw, rng, (c,)), array(draw, rng, (c,))], {}


def stats(c, rng):
    return rng.standard_normal(c), np.abs(rng.standard_normal(c)) + 0.5


def classification(draw, rng):
    n, c = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    return [array(draw, rng, (n, c))], {"target": rng.integers(0, c, size=n)}


def linear_inputs(draw, rng):
    lead = draw(small_shape(min_dims=1, max_dims=2, max_side=3))
    fin, fout = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return [array(draw, rng, lead + (fin,)), array(draw, rng, (fout, fin)),
            array(draw, rng, (fout,))], {}


def matmul_inputs(draw, rng):
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    batch = draw(st.sampled_from([(), (2,), (2, 1)]))
    a_shape = draw(st.sampled_from([(k,), batch + (m, k)]))
    b_shape = draw(st.sampled_from([(k,), (k, n), batch[-1:] + (k, n)]))
    return [array(draw, rng, a_shape), array(draw, rng, b_shape)], {}


def getitem_inputs(draw, rng):
    x = array(draw, rng, (4, 3, 5))
    index = draw(st.sampled_from([
        (slice(1, 3), 0), (Ellipsis, slice(None, None, 2)), (np.array([0, 2, 2]),),
        (slice(None), np.array([1, 1, 0]), slice(1, None)), (-1,)]))
    return [x], {"index": index}


def same_shapes(draw, rng):
    shape = draw(small_shape())
    return [array(draw, rng, shape), array(draw, rng, shape)], {}


def joined(draw, rng):
    shape = draw(small_shape(min_dims=1, max_dims=3, max_side=3))
    count = draw(st.integers(1, 3))
    return [array(draw, rng, shape) for _ in range(count)], {
        "dim": draw(st.integers(0, len(shape) - 1))}


def pad_inputs(draw, rng):
    x = array(draw, rng, draw(small_shape(min_dims=2, max_dims=4, max_side=3)))
    widths = tuple(draw(st.integers(0, 2)) for _ in range(2 * draw(st.integers(1, 2))))
    return [x], {"pad": widths}


def permute_inputs(draw, rng):
    shape = draw(small_shape(min_dims=1, max_dims=4, max_side=3))
    return [array(draw, rng, shape)], {"dims": tuple(draw(st.permutations(range(len(shape)))))}


def scaled(factor):
    """unary inputs times factor: piecewise activations see all their pieces."""
    def draw_inputs(draw, rng):
        return [array(draw, rng, draw(small_shape())) * factor], {}
    return draw_inputs


def norm_inputs(draw, rng):
    """(N, C, *spatial) with C divisible by the drawn group count, and per-channel w, b."""
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 2))
    shape = (draw(st.integers(1, 3)), c) + tuple(draw(st.integers(2, 3))
                                                for _ in range(draw(st.integers(1, 2))))
    return [array(draw, rng, shape), array(draw, rng, (c,)), array(draw, rng, (c,))], {
        "groups": groups}


def layer_norm_inputs(draw, rng):
    shape = draw(small_shape(min_dims=1, max_dims=3, max_side=4))
    assume(np.prod(shape[-1:]) > 1)
    k = draw(st.integers(1, len(shape)))
    return [array(draw, rng, shape), array(draw, rng, shape[len(shape) - k:]),
            array(draw, rng, shape[len(shape) - k:])], {"normalized_shape": shape[len(shape) - k:]}


def class_targets(draw, rng):
    """Logits (N, C) or (N, C, d), labels with some ignored, class weights, options."""
    n, c = draw(st.integers(1, 4)), draw(st.integers(2, 4))
    extra = draw(st.sampled_from([(), (3,)]))
    target = rng.integers(0, c, size=(n,) + extra)
    target.ravel()[0] = draw(st.sampled_from([target.ravel()[0], -100]))
    return [array(draw, rng, (n, c) + extra)], {
        "target": target, "weight": np.abs(rng.standard_normal(c)) + 0.1,
        "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
        "smoothing": draw(st.sampled_from([0.0, 0.25]))}


def probability_targets(draw, rng):
    n, c = draw(st.integers(1, 4)), draw(st.integers(2, 4))
    target = rng.dirichlet(np.ones(c), size=n)
    return [array(draw, rng, (n, c)), target], {
        "weight": np.abs(rng.standard_normal(c)) + 0.1,
        "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
        "smoothing": draw(st.sampled_from([0.0, 0.2]))}


def paired(positive=False, probabilities=False):
    """Input and target of one shape, a weight of that shape, and a reduction."""
    def draw_inputs(draw, rng):
        shape = draw(small_shape(max_side=3))
        x = rng.uniform(0.05, 0.95, shape) if probabilities else array(draw, rng, shape)
        t = rng.uniform(0, 1, shape) if positive else array(draw, rng, shape)
        return [x, t], {"weight": rng.uniform(0.2, 1.0, shape),
                        "reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    return draw_inputs


def resample_inputs(draw, rng):
    x = image(draw, rng, max_side=5)
    if draw(st.booleans()):
        return [x], {"size": (draw(st.integers(1, 8)), draw(st.integers(1, 8))),
                     "scale_factor": None}
    scale = draw(st.sampled_from([2, 0.5, 1.7, (3, 0.6)]))
    pair = scale if isinstance(scale, tuple) else (scale, scale)
    assume(all(int(n * s) >= 1 for n, s in zip(x.shape[2:], pair)))
    return [x], {"size": None, "scale_factor": scale}


def adaptive_inputs(draw, rng):
    x = image(draw, rng, max_side=7)
    return [x], {"output_size": (draw(st.integers(1, 5)), draw(st.integers(1, 5)))}


def distinct_adaptive_inputs(draw, rng):
    inputs, params = adaptive_inputs(draw, rng)
    x = inputs[0]
    return [(rng.permutation(x.size).reshape(x.shape) * 0.1 + 0.05)], params


def embedding_inputs(draw, rng):
    """Indices that avoid padding_idx: the padding row's gradient is 0 by definition, which
    finite differences cannot see (test_layers_torch.py compares that row with torch)."""
    rows, dim = draw(st.integers(2, 5)), draw(st.integers(1, 3))
    padding_idx = draw(st.sampled_from([None, 0, -1]))
    low, high = (1, rows) if padding_idx == 0 else (0, rows - 1 if padding_idx else rows)
    idx = rng.integers(low, high, size=draw(small_shape(max_dims=2)))
    return [array(draw, rng, (rows, dim))], {"idx": idx, "padding_idx": padding_idx}


# ----- the table -----------------------------------------------------------------------
CASES = [
    OpCase("add", binary(), lambda F, a, b: F.add(a, b)),
    OpCase("sub", binary(), lambda F, a, b: F.sub(a, b)),
    OpCase("mul", binary(), lambda F, a, b: F.mul(a, b)),
    OpCase("div", binary(positive_b=True), lambda F, a, b: F.div(a, b)),
    OpCase("pow", binary(positive_b=True), lambda F, a, b: F.pow(F.abs(b), a)),
    OpCase("pow_scalar", unary(positive=True), lambda F, a: a ** 2.5),
    OpCase("neg", unary(), lambda F, a: F.neg(a)),
    OpCase("exp", unary(), lambda F, a: F.exp(a)),
    OpCase("log", unary(positive=True), lambda F, a: F.log(a)),
    OpCase("sqrt", unary(positive=True), lambda F, a: F.sqrt(a)),
    OpCase("abs", unary(positive=True), lambda F, a: F.abs(a - 1.0)),
    OpCase("clamp", unary(), lambda F, a: F.clamp(a, min=-0.5, max=0.7)),
    OpCase("where", binary(), lambda F, a, b: F.where(a > 0.1, a, b)),
    OpCase("matmul", matmul_inputs, lambda F, a, b: F.matmul(a, b)),
    OpCase("sum", reduction, lambda F, a, dim, keepdim: F.sum(a, dim=dim, keepdim=keepdim)
           if dim is not None else F.sum(a)),
    OpCase("mean", reduction, lambda F, a, dim, keepdim: F.mean(a, dim=dim, keepdim=keepdim)
           if dim is not None else F.mean(a)),
    OpCase("var", reduction_dim, lambda F, a, dim, keepdim: F.var(a, dim=dim, keepdim=keepdim)
           if a.shape[dim] > 1 else F.sum(a)),
    OpCase("max", reduction_dim, lambda F, a, dim, keepdim: F.max(a, dim=dim,
                                                                   keepdim=keepdim)[0]),
    OpCase("min", reduction_dim, lambda F, a, dim, keepdim: F.min(a, dim=dim,
                                                                   keepdim=keepdim)[0]),
    OpCase("max_all", unary(), lambda F, a: F.max(a)),
    OpCase("reshape", unary(), lambda F, a: F.reshape(a, (-1,))),
    OpCase("view", unary(), lambda F, a: a.reshape(a.shape[::-1])),
    OpCase("flatten", unary(), lambda F, a: F.flatten(a, 0, -1)),
    OpCase("transpose", unary(), lambda F, a: F.transpose(a, 0, -1)),
    OpCase("permute", permute_inputs, lambda F, a, dims: F.permute(a, dims)),
    OpCase("squeeze", unary(), lambda F, a: F.squeeze(F.unsqueeze(a, 1), 1)),
    OpCase("unsqueeze", unary(), lambda F, a: F.unsqueeze(a, -1)),
    OpCase("expand", unary(), lambda F, a: a.unsqueeze(0).expand(3, *a.shape)),
    OpCase("cat", joined, lambda F, *ts, dim: F.cat(list(ts), dim=dim)),
    OpCase("stack", joined, lambda F, *ts, dim: F.stack(list(ts), dim=dim)),
    OpCase("pad", pad_inputs, lambda F, a, pad: F.pad(a, pad)),
    OpCase("getitem", getitem_inputs, lambda F, a, index: a[index]),
    OpCase("conv2d", conv_inputs, lambda F, x, w, b, stride, padding:
           F.conv2d(x, w, b, stride=stride, padding=padding)),
    OpCase("conv2d_1x1", conv_inputs, lambda F, x, w, b, stride, padding:
           F.conv2d(x, w[:, :, :1, :1], None)),
    OpCase("batch_norm_train", batchnorm_inputs, lambda F, x, w, b:
           F.batch_norm(x, None, None, w, b, training=True)),
    OpCase("batch_norm_eval", batchnorm_inputs, lambda F, x, w, b:
           F.batch_norm(x, *[F.tensor_like(v, x) for v in stats(x.shape[1],
                                                                  np.random.default_rng(1))],
                        w, b, training=False)),
    OpCase("relu", unary(), lambda F, a: F.relu(a)),
    OpCase("max_pool2d", maxpool_inputs, lambda F, x, kernel_size, stride, padding:
           F.max_pool2d(x, kernel_size, stride, padding)),
    OpCase("avg_pool2d", pool_inputs, lambda F, x, kernel_size, stride, padding:
           F.avg_pool2d(x, kernel_size, stride, padding)),
    OpCase("max_pool2d_options", maxpool_option_inputs, lambda F, x, kernel_size, stride,
           padding, dilation, ceil_mode: F.max_pool2d(x, kernel_size, stride, padding,
                                                      dilation, ceil_mode)),
    OpCase("avg_pool2d_options", avgpool_option_inputs, lambda F, x, kernel_size, stride,
           padding, ceil_mode, count_include_pad, divisor_override:
           F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override)),
    OpCase("adaptive_avg_pool2d", lambda d, r: ([image(d, r)], {}),
           lambda F, x: F.adaptive_avg_pool2d(x, 1)),
    OpCase("linear", linear_inputs, lambda F, x, w, b: F.linear(x, w, b)),
    OpCase("softmax", reduction_dim, lambda F, a, dim, keepdim: F.softmax(a, dim=dim)),
    OpCase("log_softmax", reduction_dim, lambda F, a, dim, keepdim: F.log_softmax(a, dim=dim)),
    OpCase("cross_entropy", classification, lambda F, x, target:
           F.cross_entropy(x, F.tensor_like(target, x))),
    OpCase("mse_loss", lambda d, r: ([array(d, r, (3, 2)), array(d, r, (3, 2))], {}),
           lambda F, a, b: F.mse_loss(a, b)),
    OpCase("dropout", unary(), lambda F, a: F.seeded_dropout(a, 0.3)),
    OpCase("residual_add", same_shapes, lambda F, a, b: F.residual_add(a, a * b, 0.7)),
    OpCase("sigmoid", scaled(4.0), lambda F, a: F.sigmoid(a)),
    OpCase("tanh", scaled(2.0), lambda F, a: F.tanh(a)),
    OpCase("logsigmoid", scaled(10.0), lambda F, a: F.logsigmoid(a)),
    OpCase("gelu", scaled(3.0), lambda F, a: F.gelu(a)),
    OpCase("gelu_tanh", scaled(3.0), lambda F, a: F.gelu(a, approximate="tanh")),
    OpCase("silu", scaled(3.0), lambda F, a: F.silu(a)),
    OpCase("leaky_relu", unary(), lambda F, a: F.leaky_relu(a, 0.2)),
    OpCase("elu", scaled(2.0), lambda F, a: F.elu(a, alpha=0.7)),
    OpCase("hardswish", scaled(4.0), lambda F, a: F.hardswish(a)),
    OpCase("hardsigmoid", scaled(4.0), lambda F, a: F.hardsigmoid(a)),
    OpCase("relu6", scaled(5.0), lambda F, a: F.relu6(a)),
    OpCase("softmax_large_logits", reduction_dim, lambda F, a, dim, keepdim:
           F.softmax(a * 1000.0, dim=dim)),
    OpCase("log_softmax_large_logits", reduction_dim, lambda F, a, dim, keepdim:
           F.log_softmax(a * 1000.0, dim=dim)),
    OpCase("layer_norm", layer_norm_inputs, lambda F, x, w, b, normalized_shape:
           F.layer_norm(x, normalized_shape, w, b, eps=1e-3)),
    OpCase("group_norm", norm_inputs, lambda F, x, w, b, groups:
           F.group_norm(x, groups, w, b, eps=1e-3)),
    OpCase("instance_norm", norm_inputs, lambda F, x, w, b, groups:
           F.instance_norm(x, weight=w, bias=b, eps=1e-3)),
    OpCase("normalize", unary(), lambda F, a: F.normalize(a, dim=0)),
    OpCase("nll_loss", class_targets, lambda F, x, target, weight, reduction, smoothing:
           F.nll_loss(x, F.tensor_like(target, x), F.tensor_like(weight, x),
                      reduction=reduction)),
    OpCase("cross_entropy_options", class_targets,
           lambda F, x, target, weight, reduction, smoothing:
           F.cross_entropy(x, F.tensor_like(target, x), F.tensor_like(weight, x),
                           reduction=reduction, label_smoothing=smoothing)),
    OpCase("cross_entropy_unweighted", class_targets,
           lambda F, x, target, weight, reduction, smoothing:
           F.cross_entropy(x, F.tensor_like(target, x), reduction=reduction,
                           label_smoothing=smoothing)),
    OpCase("cross_entropy_probabilities", probability_targets,
           lambda F, x, t, weight, reduction, smoothing:
           F.cross_entropy(x, t, F.tensor_like(weight, x), reduction=reduction,
                           label_smoothing=smoothing)),
    OpCase("binary_cross_entropy", paired(positive=True, probabilities=True),
           lambda F, x, t, weight, reduction:
           F.binary_cross_entropy(x, t, F.tensor_like(weight, x), reduction=reduction)),
    OpCase("binary_cross_entropy_with_logits", paired(positive=True),
           lambda F, x, t, weight, reduction:
           F.binary_cross_entropy_with_logits(x * 3.0, t, F.tensor_like(weight, x),
                                              reduction=reduction,
                                              pos_weight=F.tensor_like(weight[-1] + 0.5, x))),
    OpCase("mse_loss_reductions", paired(), lambda F, a, b, weight, reduction:
           F.mse_loss(a, b, reduction=reduction)),
    OpCase("l1_loss", paired(), lambda F, a, b, weight, reduction:
           F.l1_loss(a, b, reduction=reduction)),
    OpCase("smooth_l1_loss", paired(), lambda F, a, b, weight, reduction:
           F.smooth_l1_loss(a, b, reduction=reduction, beta=0.5)),
    OpCase("huber_loss", paired(), lambda F, a, b, weight, reduction:
           F.huber_loss(a, b, reduction=reduction, delta=0.7)),
    OpCase("kl_div", paired(positive=True), lambda F, a, t, weight, reduction:
           F.kl_div(a, t, reduction="batchmean" if reduction == "mean" else reduction)),
    OpCase("interpolate_nearest", resample_inputs, lambda F, x, size, scale_factor:
           F.interpolate(x, size=size, scale_factor=scale_factor)),
    OpCase("interpolate_bilinear", resample_inputs, lambda F, x, size, scale_factor:
           F.interpolate(x, size=size, scale_factor=scale_factor, mode="bilinear",
                         align_corners=False)),
    OpCase("interpolate_bilinear_corners", resample_inputs, lambda F, x, size, scale_factor:
           F.interpolate(x, size=size, scale_factor=scale_factor, mode="bilinear",
                         align_corners=True)),
    OpCase("adaptive_avg_pool2d_any", adaptive_inputs, lambda F, x, output_size:
           F.adaptive_avg_pool2d(x, output_size)),
    OpCase("adaptive_max_pool2d", distinct_adaptive_inputs, lambda F, x, output_size:
           F.adaptive_max_pool2d(x, output_size)),
    OpCase("embedding", embedding_inputs, lambda F, w, idx, padding_idx:
           F.embedding(F.tensor_like(idx, w), w, padding_idx=padding_idx)),
]
