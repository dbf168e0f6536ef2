"""Which algorithm the CPU layer (cpu.py) runs for a convolution, and why: one policy.

    >>> from tinyres.kernels import conv_plan
    >>> print(conv_plan.conv_algorithm((128, 16, 32, 32), (16, 16, 3, 3), stride=1, padding=1))
    forward: winograd, input gradient: winograd, weight gradient: shifted-rows
      - ...one line of reason per decision...

The algorithms, each held to reference.py by tests/test_kernels.py and test_conv_paths.py:

    one-gemm      im2col of the whole batch, then one GEMM (gemm_conv.py), shared among
                  Numba's threads where SciPy has a BLAS of its own (thread_gemm.py): any layer
    per-image     a GEMM of one image (or a few) in each of Numba's threads, straight into
                  NCHW, no (C*kh*kw, N*OH*OW) matrix in memory: the gradients of layers
                  with at least `per_image_min_pixels_per_channel` output pixels per
                  output channel, the output of those with at least
                  `per_image_forward_min_pixels_per_channel` (1, as the gradients; 0
                  sends every ungrouped layer's output there)
    winograd      F(2x2, 3x3) (winograd.py), for the output and the input gradient of 3x3
                  stride-1 padding-1 layers (undilated, ungrouped) with enough pixels and
                  channels, and for the weight gradient of those wider than lanes take
                  with at least `winograd_weight_grad_min_channels` channels (tasks of
                  images, each task's V and dM summed into its thread's dU while in
                  cache, its 16 GEMMs over at least `gemm_min_columns` tiles);
    winograd-4x4  F(4x4, 3x3) (winograd4.py), in place of `winograd` for the output and
                  the input gradient of layers at least `winograd_4x4_min_width` wide with
                  at least `winograd_4x4_min_channels` channels: 36 GEMMs on 4x4 output
                  tiles, 1.78x fewer multiplications than F(2x2, 3x3)'s, float32 results
                  some 20x further from the exact sum (still about 1e-5 of the output);
    winograd-lanes  the same F(2x2, 3x3) with a task's images side by side as lanes
                  (winograd_lanes.py), in place of `winograd`: for the output and input
                  gradient of layers whose output is at most `winograd_lanes_max_width`
                  wide, where it also takes layers with fewer pixels than
                  `winograd_min_pixels_per_channel` asks (resnet18's 512-channel 7x7
                  layers: its GEMMs run over the tiles of several images); and for the
                  weight gradient of those at most `winograd_weight_grad_lanes_max_width`
                  wide (16), whatever their channels (from `winograd_min_channels`), each
                  task's V and dM summed into its thread's dU while in cache;
                  both layouts run their 16 GEMMs by the BLAS, or as a Numba loop (small_gemm.py)
                  where both channel counts are at most `winograd_loop_gemm_max_channels`
                  (32, resnet20's first two stages, where SciPy's BLAS runs an AVX2 or
                  older kernel of OpenBLAS's; None, the loop off, where it runs an
                  AVX-512 one: default_loop_gemm_max_channels)
    phase-gemm    the output and the input gradient of 3x3 stride-2 padding-1 layers
                  (dense) of at most `phase_gemm_max_channels` input channels: nine GEMMs
                  on shifted views of the input's four phases, no im2col (phase_gemm.py)
    shifted-rows  the weight gradient of the other 3x3 padding-1 layers, summed from
                  shifted rows of x and grad_out (weight_grad.py), at least
                  `shifted_rows_min_width` wide: at stride 1, and at stride 2 (the
                  downsampling layers, from the phases of x, several images a sum) up to
                  `shifted_rows_max_stride`; at stride 2 from
                  `shifted_rows_phases_min_width` wide where the output and input
                  gradient run phase-gemm (no im2col columns for GEMMs to share)
    pointwise     1x1 unpadded layers with a stride of at most `pointwise_max_stride`: GEMMs
                  on the NCHW planes themselves, the strided ones on a subsample of x, no
                  im2col, col2im or transposes (pointwise_conv.py), for all three passes

A grouped layer (groups > 1, depthwise included) always takes one-gemm, its groups'
GEMMs batched into one matmul; a dilated layer takes one-gemm or per-image as any other.
The thresholds are the fields of ConvPolicy; the measurements behind them are in
benchmarks/README.md ("How the CPU layer picks a convolution"). Change them for this
thread, explicitly, with a block:

    with conv_plan.conv_policy(winograd_min_pixels_per_channel=None):   # no Winograd
        ...
    with conv_plan.conv_policy(ConvPolicy.only("one-gemm")):            # textbook im2col
        ...

The per-image and Winograd paths run GEMMs inside Numba's threads, which calls the BLAS
SciPy ships; they are used only where SciPy's BLAS is a library of its own (SciPy's
wheels), and cpu.py holds that library to one thread for the length of each call.
Deciding changes nothing: no thread count or allocator is touched here.
"""
import contextlib
import dataclasses
import functools
import os
import threading


@dataclasses.dataclass(frozen=True)
class ConvPolicy:
    """The thresholds of the CPU layer's choice (None switches an algorithm off)."""

    per_image_min_pixels_per_channel: float = 1        # OH*OW >= this * OC
    per_image_forward_min_pixels_per_channel: float = 1    # the same, for the forward
    gemm_min_columns: int = 256                        # images side by side per GEMM
    # the same for the weight gradient when per-image GEMMs compute it alone (the input's
    # gradient by another path, or not asked for), where the images' columns are the
    # GEMM's inner dimension: resnet20's s2 32->64 weight gradient 1.38-1.40 ms at 256,
    # 1.30 at 1024 (16 images a task; AMD family 26, OpenBLAS's SkylakeX kernel); the
    # layer 0.96 of its time under the tuned malloc thresholds, level under glibc's
    # defaults; resnet18's stem level (benchmarks/README.md)
    per_image_weight_grad_min_columns: int = 1024
    winograd_min_pixels_per_channel: float = 0.5       # OH*OW >= this * OC, 3x3 s1 p1
    winograd_min_channels: int = 8                     # C and OC both at least this
    winograd_task_bytes: int = 256 * 1024              # a Winograd task's V and M, at most
    # C, OC at most this: Winograd's GEMMs as small_gemm.py's loop, faster than OpenBLAS's
    # AVX2 kernels on 16 and 32 channels, slower than its AVX-512 ones: 32 or None by the
    # kernel SciPy's BLAS runs (default_loop_gemm_max_channels). It sums in another order
    # than the BLAS, as another CPU's BLAS kernel or thread count does; the training lessons
    # hold under all of those (tests/test_notebooks.py, docs/summation_orders.txt)
    winograd_loop_gemm_max_channels: int | None = dataclasses.field(
        default_factory=lambda: default_loop_gemm_max_channels())
    # the weight gradient of 3x3 s1 p1 layers of at least this many channels (C and OC),
    # wider than lanes take, by Winograd's adjoint image by image (winograd.weight_grad):
    # ahead of shifted rows on resnet18's 64@56 and of lanes on its 128@28, level with or
    # ahead of lanes on resnet20's 32@16, level with shifted rows on its 16@32, which keep
    # them (benchmarks/README.md). The threads' dU (in lanes too) take at most
    # winograd_weight_grad_chunk_bytes
    winograd_weight_grad_min_channels: int | None = 32
    winograd_weight_grad_chunk_bytes: int = 64 * 1024 * 1024
    # outputs at most this wide: Winograd's output and input gradient in lanes
    # (winograd_lanes.py), whatever their pixels: ahead of image by image on resnet20's
    # 32@16 and resnet18's 256@14 since the copies into lanes loop over a constant count
    # of images, far behind at 32 (benchmarks/README.md)
    winograd_lanes_max_width: int | None = 16
    # outputs in lanes at least this wide: Winograd's output and input gradient by
    # F(4x4, 3x3) in lanes (winograd4_lanes.py): resnet20's 32@16 forward and input
    # gradient about 0.87 of F(2x2, 3x3)'s time in lanes at batch 128, its training step
    # 0.97-0.99 and inference 0.95; behind on its 64@8, whose rows are two 4x4 tiles long
    # (benchmarks/README.md). cpu.py runs F(2x2)'s lanes where a task holds fewer than 8
    # images (cpu._winograd_layout)
    winograd_4x4_lanes_min_width: int | None = 16
    # outputs at least this wide, of at least winograd_4x4_min_channels channels (C and
    # OC): Winograd's output and input gradient by F(4x4, 3x3) (winograd4.py), 4x fewer
    # multiplications than im2col's where F(2x2, 3x3) does 2.25x; ahead on resnet18's
    # 64@56 and 128@28 layers, behind on 16@32, 32@16 and 256@14 (benchmarks/README.md)
    winograd_4x4_min_width: int | None = 28
    winograd_4x4_min_channels: int = 64
    # outputs at most this wide: the weight gradient by Winograd in lanes, a task's V and
    # dM used while in cache (winograd_min_channels and up; ahead of shifted rows, GEMMs and
    # image-by-image Winograd up to 16 wide, behind at 28: benchmarks/README.md)
    winograd_weight_grad_lanes_max_width: int | None = 16
    shifted_rows_min_width: int = 16                   # OW >= this, 3x3 p1
    # 3x3 s2 p1 layers whose output and input gradient run phase-gemm: the weight gradient
    # from shifted rows of the phases, several images a sum (weight_grad.py), from this
    # wide: resnet20's 32->64 (8 wide) 0.9 of the per-image GEMMs' time. Not where the
    # input gradient runs GEMMs: they share im2col's columns with the weight gradient's,
    # and resnet18's 128->256 (14 wide) took 1.05 of its gradients' time with the weight
    # gradient apart (benchmarks/README.md)
    shifted_rows_phases_min_width: int | None = 8
    shifted_rows_max_stride: int | None = 2            # 3x3 p1 layers of stride <= this
    pointwise_max_stride: int = 2                      # 1x1 p0 layers with stride <= this
    # 3x3 stride-2 padding-1 layers of at most this many input channels: the output and
    # the input gradient by nine GEMMs on the input's phases (phase_gemm.py), no im2col;
    # ahead of per-image im2col on resnet20's 16 and 32 channels with OpenBLAS's AVX-512
    # kernels, behind on resnet18's 64 to 256, and behind on all with its AVX2 ones, whose
    # GEMMs of 16 and 32 inner entries run slowly: 32 or None by the kernel SciPy's BLAS
    # runs (default_phase_gemm_max_channels; benchmarks/README.md)
    phase_gemm_max_channels: int | None = dataclasses.field(
        default_factory=lambda: default_phase_gemm_max_channels())
    # images a phase-gemm task (fewer where the batch gives a thread fewer; None: as many
    # as gemm_min_columns asks, one image of resnet20's 16->32): resnet20's 16->32
    # forward 1.31-1.41 ms in tasks of 4 against 1.51-1.94 in tasks of 1, input gradient
    # 1.16-1.27 against 1.32-1.64; its 32->64 already ran 4 (8: 1.44-1.57 against 1.18)
    # (batch 128, 2 threads, AMD family 26, OpenBLAS's SkylakeX kernel)
    phase_gemm_images: int | None = 4

    @classmethod
    def only(cls, algorithm):
        """A policy that runs one GEMM path everywhere: 'one-gemm' or 'per-image'."""
        off = dict(winograd_min_pixels_per_channel=None, shifted_rows_min_width=None,
                   shifted_rows_phases_min_width=None,
                   winograd_weight_grad_min_channels=None, pointwise_max_stride=None,
                   winograd_lanes_max_width=None, winograd_weight_grad_lanes_max_width=None,
                   phase_gemm_max_channels=None)
        if algorithm == "one-gemm":
            return cls(per_image_min_pixels_per_channel=None,
                       per_image_forward_min_pixels_per_channel=None, **off)
        if algorithm == "per-image":
            return cls(per_image_min_pixels_per_channel=0,
                       per_image_forward_min_pixels_per_channel=0, **off)
        raise ValueError(f"ConvPolicy.only: expected 'one-gemm' or 'per-image', got "
                         f"{algorithm!r} (Winograd and shifted rows apply to 3x3 layers only)")


@dataclasses.dataclass(frozen=True)
class ConvPlan:
    """What runs for one convolution: an algorithm per pass, and the reasons."""

    forward: str
    grad_input: str
    grad_weight: str
    reasons: tuple

    def __str__(self):
        head = (f"forward: {self.forward}, input gradient: {self.grad_input}, "
                f"weight gradient: {self.grad_weight}")
        return "\n".join([head] + [f"  - {r}" for r in self.reasons])


_current = threading.local()


def current_policy():
    """The policy in force for this thread (ConvPolicy() unless conv_policy() changed it)."""
    return getattr(_current, "policy", None) or _default_policy(
        default_loop_gemm_max_channels(), default_phase_gemm_max_channels())


@functools.lru_cache(maxsize=None)
def _default_policy(loop_gemm_max_channels, phase_gemm_max_channels):
    """ConvPolicy() under these defaults (the kernel SciPy's BLAS runs), made once: a
    training step asks for the policy a few hundred times, and making it costs microseconds."""
    return ConvPolicy(winograd_loop_gemm_max_channels=loop_gemm_max_channels,
                      phase_gemm_max_channels=phase_gemm_max_channels)


@contextlib.contextmanager
def conv_policy(policy=None, **changes):
    """Use `policy` (or the current one with `changes` to its fields) in this block."""
    base = policy if policy is not None else current_policy()
    previous = getattr(_current, "policy", None)
    _current.policy = dataclasses.replace(base, **changes)
    try:
        yield _current.policy
    finally:
        _current.policy = previous


@functools.lru_cache(maxsize=None)
def scipy_blas():
    """The threadpoolctl controller of SciPy's own BLAS (what np.dot calls inside Numba),
    or None where SciPy shares NumPy's BLAS or is missing. Only looks; changes nothing."""
    try:
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library Numba calls)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    scipy_dir = os.path.dirname(scipy.__file__)
    own = [lib for lib in ThreadpoolController().select(user_api="blas").lib_controllers
           if lib.filepath.startswith((scipy_dir + os.sep, scipy_dir + ".libs" + os.sep))]
    return own[0] if own else None


def _is_3x3_same(kh, kw, sh, sw, ph, pw, dh, dw, groups):
    """Winograd's case: a dense (undilated, ungrouped) 3x3 stride-1 padding-1 layer."""
    return (kh, kw, sh, sw, ph, pw, dh, dw, groups) == (3, 3, 1, 1, 1, 1, 1, 1, 1)


def _shifted_rows_stride(kh, kw, sh, sw, ph, pw, dh, dw, groups):
    """The shifted rows' cases: a dense 3x3 padding-1 layer at stride 1 or 2 (the same
    both ways): that stride, else None."""
    if (kh, kw, ph, pw, dh, dw, groups) == (3, 3, 1, 1, 1, 1, 1) and sh == sw in (1, 2):
        return sh
    return None


def _is_1x1(kh, kw, ph, pw):
    """The pointwise case: a 1x1 unpadded kernel (its dilation does not matter)."""
    return (kh, kw, ph, pw) == (1, 1, 0, 0)


def _at_least(value, threshold):
    return threshold is not None and value >= threshold


def _at_most(value, threshold):
    return threshold is not None and value <= threshold


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def conv_algorithm(x_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                   policy=None):
    """The ConvPlan the CPU layer follows for x (N, C, H, W) and weight
    (OC, C/groups, kh, kw), with torch's stride, padding (ints or pairs), dilation, groups.
    Decided once for each layer shape, policy and BLAS (the batch size plays no part) and
    remembered: a training step asks about each of its layers three times."""
    return _decide(tuple(int(v) for v in x_shape[1:]), tuple(int(v) for v in weight_shape),
                   _pair(stride), _pair(padding), _pair(dilation), groups,
                   policy or current_policy(), scipy_blas() is not None, blas_kernel())


@functools.lru_cache(maxsize=4096)
def _decide(chw, weight_shape, stride, padding, dilation, groups, policy, threads_ok,
            kernel):
    """conv_algorithm's plan, from the whole of what it depends on: the input's (C, H, W),
    the weight's shape, the window, the policy, whether SciPy has a BLAS of its own and
    the kernel that BLAS runs."""
    c, h, w = chw
    oc, _, kh, kw = weight_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    pixels, same3 = oh * ow, _is_3x3_same(kh, kw, sh, sw, ph, pw, dh, dw, groups)
    reasons = []

    if groups != 1:
        reasons.append(f"{groups} groups: one-gemm, the groups' GEMMs batched in one matmul "
                       f"(per-image, Winograd and shifted rows take ungrouped layers only)")
        return ConvPlan("one-gemm", "one-gemm", "one-gemm", tuple(reasons))
    most = policy.pointwise_max_stride
    if threads_ok and _is_1x1(kh, kw, ph, pw) and most is not None and max(sh, sw) <= most:
        reasons.append(f"1x1 unpadded, stride {max(sh, sw)}: pointwise, GEMMs on the NCHW "
                       f"planes (up to stride {policy.pointwise_max_stride})")
        return ConvPlan("pointwise", "pointwise", "pointwise", tuple(reasons))
    per_image = threads_ok and _at_least(pixels, _scaled(policy.per_image_min_pixels_per_channel, oc))
    gemm = "per-image" if per_image else "one-gemm"
    forward_per_image = threads_ok and _at_least(
        pixels, _scaled(policy.per_image_forward_min_pixels_per_channel, oc))
    forward_gemm = "per-image" if forward_per_image else "one-gemm"
    if not threads_ok:
        reasons.append("SciPy has no BLAS of its own here: GEMMs inside threads are off, "
                       "so one-gemm")
    else:
        reasons.append(f"{pixels} output pixels for {oc} channels: {gemm} for the "
                       f"gradients (per-image from {policy.per_image_min_pixels_per_channel} "
                       f"a channel), {forward_gemm} for the output (from "
                       f"{policy.per_image_forward_min_pixels_per_channel})")

    phases = (threads_ok and _shifted_rows_stride(kh, kw, sh, sw, ph, pw, dh, dw, groups) == 2
              and _at_most(c, policy.phase_gemm_max_channels))
    if phases:
        reasons.append(f"3x3 stride 2 padding 1, {c} input channels: phase-gemm for the "
                       f"output and the input gradient (up to "
                       f"{policy.phase_gemm_max_channels} channels)")
    min_pixels = policy.winograd_min_pixels_per_channel
    lanes = same3 and _at_most(ow, policy.winograd_lanes_max_width)
    winograd = (same3 and threads_ok and min_pixels is not None
                and min(c, oc) >= policy.winograd_min_channels
                and (lanes or _at_least(pixels, _scaled(min_pixels, oc))))
    if same3:
        reasons.append(f"3x3 stride 1 padding 1, {c} -> {oc} channels, {pixels} pixels: "
                       f"{'winograd' if winograd else 'no winograd'} (from "
                       f"{min_pixels} pixels a channel, or any where the output is at most "
                       f"{policy.winograd_lanes_max_width} wide, and "
                       f"{policy.winograd_min_channels} channels)")
    four = (not lanes and _at_least(ow, policy.winograd_4x4_min_width)
            and min(c, oc) >= policy.winograd_4x4_min_channels)
    four_lanes = lanes and _at_least(ow, policy.winograd_4x4_lanes_min_width)
    if winograd:
        reasons.append(f"output {ow} wide: Winograd's tiles "
                       + ("4x4, F(4x4, 3x3), in lanes, images side by side" if four_lanes
                          else "in lanes, images side by side" if lanes else
                          "4x4, F(4x4, 3x3), image by image" if four else "image by image")
                       + f" (lanes up to {policy.winograd_lanes_max_width} wide, 4x4 from "
                       f"{policy.winograd_4x4_lanes_min_width}; 4x4 tiles image by image "
                       f"from {policy.winograd_4x4_min_width} wide and "
                       f"{policy.winograd_4x4_min_channels} channels)")
        loop = winograd_loop_gemm(c, oc, policy)
        most = policy.winograd_loop_gemm_max_channels
        reasons.append(f"winograd's GEMMs {'as a Numba loop' if loop else 'by the BLAS'} "
                       + (f"(a loop up to {most} channels)" if most is not None
                          else "(the loop is off)")
                       + f", SciPy's BLAS running OpenBLAS's {kernel} kernel"
                       " (the loop is off by default on its AVX-512 kernels)")
    winograd_ok = same3 and threads_ok and min(c, oc) >= policy.winograd_min_channels
    lanes_w = winograd_ok and _at_most(ow, policy.winograd_weight_grad_lanes_max_width)
    planes_w = winograd_ok and _at_least(min(c, oc), policy.winograd_weight_grad_min_channels)
    layout_w = "winograd-lanes" if lanes_w else "winograd" if planes_w else None
    rows_stride = _shifted_rows_stride(kh, kw, sh, sw, ph, pw, dh, dw, groups)
    rows_min_width = (policy.shifted_rows_phases_min_width if phases
                      else policy.shifted_rows_min_width)
    shifted = (rows_stride is not None and layout_w is None
               and _at_least(ow, rows_min_width)
               and _at_most(rows_stride, policy.shifted_rows_max_stride))
    if rows_stride == 2:
        reasons.append(f"3x3 stride 2 padding 1, output {ow} wide: weight gradient "
                       + ("from shifted rows of the input's phases" if shifted else "by GEMM")
                       + f" (from {rows_min_width} wide, up to stride "
                       f"{policy.shifted_rows_max_stride})")
    if same3:
        reasons.append(f"{c} -> {oc} channels, output {ow} wide: weight gradient "
                       + (f"by {layout_w}" if layout_w else
                          "from shifted rows" if shifted else "by GEMM")
                       + f" (winograd in lanes up to "
                       f"{policy.winograd_weight_grad_lanes_max_width} wide, image by image "
                       f"from {policy.winograd_weight_grad_min_channels} channels, both from "
                       f"{policy.winograd_min_channels}; else shifted rows from "
                       f"{policy.shifted_rows_min_width} wide)")
    layout = ("winograd-4x4-lanes" if four_lanes else "winograd-lanes" if lanes
              else "winograd-4x4" if four else "winograd")
    return ConvPlan(forward=layout if winograd else "phase-gemm" if phases else forward_gemm,
                    grad_input=layout if winograd else "phase-gemm" if phases else gemm,
                    grad_weight=layout_w or ("shifted-rows" if shifted else gemm),
                    reasons=tuple(reasons))


# OpenBLAS's AVX-512 kernels (what it picks on a CPU with AVX-512): their small GEMMs
# were ahead of small_gemm.py's loop at every width measured (benchmarks/README.md, "Where
# the 3x3 layers' time goes"); its AVX2 and older kernels were behind it on 16 channels,
# and behind per-image im2col on phase-gemm's GEMMs of 16 and 32 inner entries
AVX512_BLAS_KERNELS = ("SkylakeX", "Cooperlake", "SapphireRapids")
LOOP_GEMM_MAX_CHANNELS = 32
PHASE_GEMM_MAX_CHANNELS = 32


def blas_kernel():
    """The kernel SciPy's BLAS runs, as threadpoolctl names it ('SkylakeX', 'Haswell'), or
    None where there is no such BLAS (or it does not say)."""
    return getattr(scipy_blas(), "architecture", None)


@functools.lru_cache(maxsize=None)
def default_loop_gemm_max_channels():
    """The policy's default winograd_loop_gemm_max_channels: None (the BLAS) where SciPy's
    BLAS runs one of OpenBLAS's AVX-512 kernels, else LOOP_GEMM_MAX_CHANNELS."""
    return None if blas_kernel() in AVX512_BLAS_KERNELS else LOOP_GEMM_MAX_CHANNELS


@functools.lru_cache(maxsize=None)
def default_phase_gemm_max_channels():
    """The policy's default phase_gemm_max_channels: PHASE_GEMM_MAX_CHANNELS where SciPy's
    BLAS runs one of OpenBLAS's AVX-512 kernels, else None (phase-gemm off)."""
    return PHASE_GEMM_MAX_CHANNELS if blas_kernel() in AVX512_BLAS_KERNELS else None


def winograd_loop_gemm(c, oc, policy=None):
    """Whether a Winograd layer of c -> oc channels runs its GEMMs as small_gemm.py's loop:
    both counts at most the policy's winograd_loop_gemm_max_channels."""
    most = (policy or current_policy()).winograd_loop_gemm_max_channels
    return most is not None and max(c, oc) <= most


def _scaled(per_channel, channels):
    return None if per_channel is None else per_channel * channels
