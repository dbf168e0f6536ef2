"""Transforms on whole NumPy batches (N, C, H, W), vectorised: no loop over samples.

    aug = Compose([RandomCrop(32, padding=4, rng=gen), RandomHorizontalFlip(rng=gen),
                   Normalize(mean, std)])
    x = aug(x)

A random transform draws from a numpy.random.Generator: the one passed as `rng` (several
transforms may share one), or its own seeded from `rng` when that is a seed. Its
`state_dict()` captures the generator, so a resumed run augments exactly as an
uninterrupted one would.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pair(size):
    return (size, size) if np.isscalar(size) else tuple(size)


def _generator(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def state_dict(self):
        """The states of the random transforms, keyed by position."""
        return {str(i): t.state_dict() for i, t in enumerate(self.transforms)
                if hasattr(t, "state_dict")}

    def load_state_dict(self, state):
        for i, t in enumerate(self.transforms):
            if str(i) in state:
                t.load_state_dict(state[str(i)])

    def __repr__(self):
        return f"Compose({self.transforms!r})"


class Normalize:
    """(x - mean[c]) / std[c] per channel."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        if np.any(self.std <= 0):
            raise ValueError(f"Normalize: std must be positive, got {std}")

    def __call__(self, x):
        return ((x - self.mean) / self.std).astype(np.float32, copy=False)

    def __repr__(self):
        return f"Normalize(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"


class RandomTransform:
    """Base class of the transforms that draw random numbers."""

    def __init__(self, rng=None):
        self.rng = _generator(rng)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]


class RandomCrop(RandomTransform):
    """Zero-pad each side by `padding`, then cut a random `size` window per sample."""

    def __init__(self, size, padding=0, rng=None):
        super().__init__(rng)
        self.size = _pair(size)
        self.padding = int(padding)

    def __call__(self, x):
        p = self.padding
        padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
        h, w = self.size
        H, W = padded.shape[2:]
        if h > H or w > W:
            raise ValueError(f"RandomCrop: crop {self.size} is larger than the padded "
                             f"image {(H, W)}")
        top = self.rng.integers(0, H - h + 1, size=len(x))
        left = self.rng.integers(0, W - w + 1, size=len(x))
        windows = sliding_window_view(padded, (h, w), axis=(2, 3))   # (N, C, H', W', h, w)
        return np.ascontiguousarray(windows[np.arange(len(x)), :, top, left])

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip(RandomTransform):
    """Mirror each sample left-right with probability p."""

    def __init__(self, p=0.5, rng=None):
        super().__init__(rng)
        self.p = p

    def __call__(self, x):
        flip = self.rng.random(len(x)) < self.p
        out = x.copy()
        out[flip] = x[flip][..., ::-1]
        return out

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


def to_rgb(images):
    """Grayscale (N, 1, H, W) -> (N, 3, H, W) by repeating the channel; 3 channels pass."""
    if images.shape[1] == 3:
        return images
    if images.shape[1] != 1:
        raise ValueError(f"to_rgb: expected 1 or 3 channels, got shape {images.shape}")
    return np.repeat(images, 3, axis=1)


def upsample(images, factor):
    """Nearest-neighbour upsampling of (N, C, H, W) by an integer factor (8x8 -> 16x16)."""
    if factor == 1:
        return images
    return np.repeat(np.repeat(images, factor, axis=2), factor, axis=3)


def channel_stats(images):
    """Per-channel mean and std of (N, C, H, W), for Normalize."""
    return images.mean(axis=(0, 2, 3)), images.std(axis=(0, 2, 3)) + 1e-8
