"""Data sources: the embedded default (handwritten digits), local ImageFolders, synthetic noise.

Every source yields a :class:`Dataset`: float images in [0, 1] (N, 3, H, W) and integer labels.
Models own their normalization (see ``vitrobust.zoo.wrapper``), so data stays in pixel space
where attack budgets are defined.

The embedded default is scikit-learn's bundled handwritten digits (1,797 8x8 images, shipped
inside the installed ``sklearn`` package, so no download). They are upsampled to 32x32 so that a
patch-4 ViT sees 64 tokens, enough for token pruning to matter.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .defaults import DATA_SOURCE, SPLIT
from .errors import VitrobustError

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp", ".tif", ".tiff")

# Fixed split sizes of the 1,797 digits (the rest is train). Seeded, so every run sees the same.
_DIGITS_VAL, _DIGITS_TEST, _DIGITS_SEED = 250, 450, 0


class DataError(VitrobustError):
    """A data source cannot be read; the message is one line and names the path."""


@dataclass(frozen=True)
class Dataset:
    """Images in [0, 1] with their labels, plus a fingerprint that names the exact content."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()[:16]

    def take(self, indices) -> "Dataset":
        indices = torch.as_tensor(indices, dtype=torch.long)
        return Dataset(self.name, self.images[indices], self.labels[indices], self.num_classes)

    def limit(self, n: int | None) -> "Dataset":
        if n is None or n >= len(self):
            return self
        return self.take(torch.arange(n))


def load_dataset(source: str = DATA_SOURCE, split: str = SPLIT, limit: int | None = None,
                 image_size: int | None = None) -> Dataset:
    """Load ``split`` of ``source``: ``digits`` (embedded), ``synthetic``, or an ImageFolder path."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if source == "digits":
        data = _digits(split, image_size or 32)
    elif source == "synthetic":
        data = _synthetic(split, image_size or 32)
    else:
        data = load_image_folder(source, split, image_size or 224)
    return data.limit(limit)


def _split_indices(n: int, split: str, n_val: int, n_test: int, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    bounds = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, n)}
    lo, hi = bounds[split]
    return np.sort(order[lo:hi])


def _digits(split: str, image_size: int) -> Dataset:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no network

    digits = load_digits()
    idx = _split_indices(len(digits.target), split, _DIGITS_VAL, _DIGITS_TEST, _DIGITS_SEED)
    small = torch.tensor(digits.images[idx], dtype=torch.float32).unsqueeze(1) / 16.0
    big = F.interpolate(small, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = big.clamp(0, 1).repeat(1, 3, 1, 1).contiguous()
    labels = torch.tensor(digits.target[idx], dtype=torch.long)
    return Dataset(f"digits/{split}", images, labels, 10)


def _synthetic(split: str, image_size: int, n: int = 64, num_classes: int = 10) -> Dataset:
    """Seeded noise images with arbitrary labels: for plumbing tests, never for findings."""
    gen = torch.Generator().manual_seed(SPLITS.index(split))
    images = torch.rand(n, 3, image_size, image_size, generator=gen)
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    return Dataset(f"synthetic/{split}", images, labels, num_classes)


def load_image_folder(path: str | os.PathLike, split: str = "test", image_size: int = 224) -> Dataset:
    """Read an ImageFolder (one sub-folder per class) with PIL, resized and center-cropped.

    ``path`` may hold the split folders (``path/val``, ``path/test``) or be the class folders
    themselves. Classes are the sorted sub-folder names, as torchvision's ImageFolder does.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    for candidate in (root / split, root / ("val" if split == "test" else split)):
        if candidate.is_dir():
            root = candidate
            break
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files = [(f, label) for label, c in enumerate(classes)
             for f in sorted((root / c).iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise DataError(f"{root}: no images in class sub-folders (expected {root}/<class>/<image>)")
    images = []
    for file, _ in files:
        try:
            with Image.open(file) as im:
                images.append(_to_tensor(im.convert("RGB"), image_size))
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{file}: cannot read image ({exc.__class__.__name__})") from None
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    return Dataset(f"folder:{root}", torch.stack(images), labels, len(classes))


def _to_tensor(image, size: int) -> torch.Tensor:
    """Resize the short side to size/0.875 and center-crop ``size`` (the ImageNet eval recipe)."""
    short = round(size / 0.875)
    w, h = image.size
    scale = short / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))))
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
