"""VisionDataset, the base of the image datasets, and the error for files that are missing.

Nothing here downloads: this machine may have no network. `download=True` with the files
absent raises a RuntimeError naming each file, the folder it belongs in and the URL to
fetch it from, so a user can put them there by hand.
"""
import os

from tinyres.utils.data import Dataset


class VisionDataset(Dataset):
    """A dataset under `root` whose samples pass through `transform` (the image) and
    `target_transform` (the label)."""

    _repr_indent = 4

    def __init__(self, root=None, transform=None, target_transform=None):
        self.root = os.path.expanduser(os.fspath(root)) if root is not None else None
        self.transform = transform
        self.target_transform = target_transform

    def _apply_transforms(self, img, target):
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"Number of datapoints: {len(self)}"]
        if self.root is not None:
            lines.append(f"Root location: {self.root}")
        lines += [line for line in self.extra_repr().splitlines() if line]
        if self.transform is not None:
            lines.append(f"Transform: {self.transform!r}")
        if self.target_transform is not None:
            lines.append(f"Target transform: {self.target_transform!r}")
        body = "\n".join(" " * self._repr_indent + line for line in lines)
        return f"Dataset {type(self).__name__}\n{body}"


def require_files(name, folder, files, url, download):
    """Raise a RuntimeError unless every file in `files` exists in `folder` (plain or
    gzipped). The message lists what is missing, where it goes, and where to get it."""
    missing = [f for f in files if not _present(os.path.join(folder, f))]
    if not missing:
        return
    why = ("download=True cannot fetch it: tinyres does not download" if download
           else "You can use download=True to see where to get it")
    raise RuntimeError(
        f"Dataset not found. {name}: missing {', '.join(missing)} in {folder}. {why}; "
        f"get the files from {url} and put them (extracted) in {folder}")


def _present(path):
    return os.path.isfile(path) or os.path.isfile(path + ".gz")
