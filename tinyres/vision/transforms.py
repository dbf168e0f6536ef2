"""Transforms on one image, as torchvision.transforms (v1) has them.

An image is either a NumPy array laid out as a PIL image is, (H, W) or (H, W, C) (what
tinyres.vision.datasets return, where torchvision returns PIL images), or a Tensor
(..., C, H, W) (after ToTensor). Geometric transforms keep the kind they are given;
ToTensor turns the first into the second; Normalize wants a float Tensor, as in
torchvision. The random transforms draw from NumPy's global stream, which
tinyres.manual_seed seeds, so a seed repeats the augmentation (torchvision draws from
torch's stream: the same seed gives different crops there).

    train_tf = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(),
                        Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))])
"""
import numbers
from enum import Enum

import numpy as np

from tinyres import backend
from tinyres.tensor import Tensor
from tinyres.vision.resize import resize_array

PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


class InterpolationMode(Enum):
    """How Resize fills new pixels."""
    NEAREST = "nearest"
    BILINEAR = "bilinear"


class Compose:
    """Apply `transforms` one after another."""

    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self):
        body = "".join(f"\n    {t}" for t in self.transforms)
        return f"{type(self).__name__}({body}\n)"


class ToTensor:
    """(H, W[, C]) array (or PIL image) -> (C, H, W) Tensor; uint8 is scaled to float32 in
    [0, 1], other dtypes are kept unscaled (as torchvision does for arrays)."""

    def __call__(self, pic):
        if hasattr(pic, "getbands") and hasattr(pic, "mode"):        # a PIL image
            pic = np.array(pic, dtype=np.uint8 if pic.mode in ("L", "RGB", "RGBA") else None)
        if not isinstance(pic, np.ndarray):
            raise TypeError(f"pic should be PIL Image or ndarray. Got {type(pic)}")
        if pic.ndim not in (2, 3):
            raise ValueError(f"pic should be 2/3 dimensional. Got {pic.ndim} dimensions.")
        if pic.ndim == 2:
            pic = pic[:, :, None]
        chw = np.ascontiguousarray(pic.transpose(2, 0, 1))
        if chw.dtype == np.uint8:
            chw = chw.astype(np.float32) / np.float32(255)
        return Tensor(chw)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Normalize:
    """(t - mean[c]) / std[c] on a float Tensor (..., C, H, W)."""

    def __init__(self, mean, std, inplace=False):
        self.mean, self.std, self.inplace = mean, std, inplace

    def __call__(self, tensor):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"img should be Tensor Image. Got {type(tensor)}")
        if tensor.dtype.kind != "f":
            raise TypeError(f"Input tensor should be a float tensor. Got {tensor.dtype}.")
        if tensor.ndim < 3:
            raise ValueError(f"Expected tensor to be a tensor image of size (..., C, H, W). "
                             f"Got tensor.size() = {tensor.shape}")
        xp = backend.get_array_module(tensor.array)
        mean = xp.asarray(self.mean, dtype=tensor.dtype)
        std = xp.asarray(self.std, dtype=tensor.dtype)
        if bool((std == 0).any()):
            raise ValueError(f"std evaluated to zero after conversion to {tensor.dtype}, "
                             f"leading to division by zero.")
        shape = (-1, 1, 1)
        out = (tensor.array - mean.reshape(shape)) / std.reshape(shape)
        if self.inplace:
            tensor.array[...] = out
            return tensor
        return Tensor(out.astype(tensor.dtype, copy=False))

    def __repr__(self):
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


class Lambda:
    """Apply a user function."""

    def __init__(self, lambd):
        if not callable(lambd):
            raise TypeError(f"Argument lambd should be callable, got "
                            f"{type(lambd).__name__!r}")
        self.lambd = lambd

    def __call__(self, img):
        return self.lambd(img)

    def __repr__(self):
        return f"{type(self).__name__}()"


# ----- geometry: arrays laid out as PIL (H, W[, C]) or Tensors (..., C, H, W) ----------------
def _raw(img):
    """(array, axis of H, wrap back): the array behind `img` and where its rows are."""
    if isinstance(img, Tensor):
        return img.array, img.ndim - 2, Tensor
    if isinstance(img, np.ndarray):
        return img, 0, lambda a: a
    raise TypeError(f"img should be a NumPy array (H, W[, C]) or a Tensor (..., C, H, W). "
                    f"Got {type(img)}")


def get_image_size(img):
    """[width, height], as torchvision's F.get_image_size."""
    array, h_axis, _ = _raw(img)
    return [array.shape[h_axis + 1], array.shape[h_axis]]


def crop(img, top, left, height, width):
    """The window at (top, left) of size (height, width)."""
    array, h_axis, wrap = _raw(img)
    index = [slice(None)] * array.ndim
    index[h_axis] = slice(top, top + height)
    index[h_axis + 1] = slice(left, left + width)
    return wrap(array[tuple(index)].copy())


def hflip(img):
    """Mirror left-right."""
    array, h_axis, wrap = _raw(img)
    xp = backend.get_array_module(array)
    return wrap(xp.ascontiguousarray(xp.flip(array, axis=h_axis + 1)))


def vflip(img):
    """Mirror top-bottom."""
    array, h_axis, wrap = _raw(img)
    xp = backend.get_array_module(array)
    return wrap(xp.ascontiguousarray(xp.flip(array, axis=h_axis)))


def _ltrb(padding):
    """torchvision's padding forms -> (left, top, right, bottom)."""
    if isinstance(padding, numbers.Number):
        return (int(padding),) * 4
    padding = list(padding)
    if len(padding) not in (1, 2, 4):
        raise ValueError(f"Padding must be an int or a 1, 2, or 4 element tuple, not a "
                         f"{len(padding)} element tuple")
    if len(padding) == 1:
        return (padding[0],) * 4
    if len(padding) == 2:
        return padding[0], padding[1], padding[0], padding[1]
    return tuple(padding)


def pad(img, padding, fill=0, padding_mode="constant"):
    """Pad the borders: `padding` an int, (left/right, top/bottom) or (l, t, r, b);
    padding_mode constant (with `fill`, a number or one per channel), edge, reflect or
    symmetric."""
    if padding_mode not in PADDING_MODES:
        raise ValueError("Padding mode should be either constant, edge, reflect or symmetric")
    left, top, right, bottom = _ltrb(padding)
    array, h_axis, wrap = _raw(img)
    xp = backend.get_array_module(array)
    widths = [(0, 0)] * array.ndim
    widths[h_axis], widths[h_axis + 1] = (top, bottom), (left, right)
    if padding_mode != "constant":
        return wrap(xp.pad(array, widths, mode=padding_mode))
    if isinstance(fill, numbers.Number):
        return wrap(xp.pad(array, widths, mode="constant", constant_values=fill))
    if wrap is Tensor:
        raise TypeError("Got inappropriate fill arg")         # torchvision: numbers only
    out = xp.pad(array, widths, mode="constant")
    border = xp.ones(out.shape[:2], dtype=bool)
    border[top:top + array.shape[0], left:left + array.shape[1]] = False
    out[border] = xp.asarray(fill, dtype=array.dtype)          # one value per channel
    return wrap(out)


def _size_pair(size, what="size"):
    if isinstance(size, numbers.Number):
        return int(size), int(size)
    if len(size) == 1:
        return size[0], size[0]
    if len(size) != 2:
        raise ValueError(f"Please provide only two dimensions (h, w) for {what}.")
    return tuple(size)


class Pad:
    """pad() as a transform."""

    def __init__(self, padding, fill=0, padding_mode="constant"):
        if padding_mode not in PADDING_MODES:
            raise ValueError("Padding mode should be either constant, edge, reflect or "
                             "symmetric")
        _ltrb(padding)
        self.padding, self.fill, self.padding_mode = padding, fill, padding_mode

    def __call__(self, img):
        return pad(img, self.padding, self.fill, self.padding_mode)

    def __repr__(self):
        return (f"{type(self).__name__}(padding={self.padding}, fill={self.fill}, "
                f"padding_mode={self.padding_mode})")


class CenterCrop:
    """The central (h, w) window, padding with zeros first if the image is smaller."""

    def __init__(self, size):
        self.size = _size_pair(size)

    def __call__(self, img):
        th, tw = self.size
        w, h = get_image_size(img)
        if tw > w or th > h:
            img = pad(img, [(tw - w) // 2 if tw > w else 0, (th - h) // 2 if th > h else 0,
                            (tw - w + 1) // 2 if tw > w else 0,
                            (th - h + 1) // 2 if th > h else 0])
            w, h = get_image_size(img)
        return crop(img, int(round((h - th) / 2.0)), int(round((w - tw) / 2.0)), th, tw)

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size})"


class RandomCrop:
    """Pad (optionally), then cut a (h, w) window at a random place."""

    def __init__(self, size, padding=None, pad_if_needed=False, fill=0,
                 padding_mode="constant"):
        self.size = _size_pair(size)
        self.padding, self.pad_if_needed = padding, pad_if_needed
        self.fill, self.padding_mode = fill, padding_mode

    @staticmethod
    def get_params(img, output_size):
        """(top, left, h, w) of a random window of output_size."""
        w, h = get_image_size(img)
        th, tw = output_size
        if h < th or w < tw:
            raise ValueError(f"Required crop size {(th, tw)} is larger than input image "
                             f"size {(h, w)}")
        if w == tw and h == th:
            return 0, 0, h, w
        top = int(np.random.randint(0, h - th + 1))
        left = int(np.random.randint(0, w - tw + 1))
        return top, left, th, tw

    def __call__(self, img):
        if self.padding is not None:
            img = pad(img, self.padding, self.fill, self.padding_mode)
        w, h = get_image_size(img)
        if self.pad_if_needed and w < self.size[1]:
            img = pad(img, [self.size[1] - w, 0], self.fill, self.padding_mode)
        if self.pad_if_needed and h < self.size[0]:
            img = pad(img, [0, self.size[0] - h], self.fill, self.padding_mode)
        return crop(img, *self.get_params(img, self.size))

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror left-right with probability p."""

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img):
        return hflip(img) if np.random.random_sample() < self.p else img

    def __repr__(self):
        return f"{type(self).__name__}(p={self.p})"


class RandomVerticalFlip(RandomHorizontalFlip):
    """Mirror top-bottom with probability p."""

    def __call__(self, img):
        return vflip(img) if np.random.random_sample() < self.p else img


class Resize:
    """Resize to `size` (h, w), or make the shorter side `size` keeping the aspect ratio;
    nearest, or bilinear (antialiased when shrinking, as torchvision: always on image
    arrays, on Tensors unless antialias=False)."""

    def __init__(self, size, interpolation=InterpolationMode.BILINEAR, max_size=None,
                 antialias=True):
        self.size, self.max_size = size, max_size
        self.interpolation = InterpolationMode(getattr(interpolation, "value", interpolation))
        self.antialias = antialias

    def __call__(self, img):
        array, h_axis, wrap = _raw(img)
        w, h = get_image_size(img)
        out_h, out_w = _output_size(h, w, self.size, self.max_size)
        mode = self.interpolation.value
        if mode == "nearest" and wrap is not Tensor:
            mode = "nearest-pil"                     # an image array resizes as PIL does
        if mode == "bilinear" and (self.antialias or wrap is not Tensor):
            mode = "bilinear-aa"                     # (PIL always antialiases)
        return wrap(resize_array(array, h_axis, out_h, out_w, mode))

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation})"


def _output_size(h, w, size, max_size):
    """torchvision's rule: an int sets the shorter side, a pair sets (h, w)."""
    if not isinstance(size, numbers.Number) and len(size) == 2:
        return tuple(size)
    size = size if isinstance(size, numbers.Number) else size[0]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_long, new_short) if w <= h else (new_short, new_long)
