"""Data sources: the embedded default (handwritten digits), local ImageFolders, synthetic noise.

Every source yields a :class:`Dataset`: float images in [0, 1] (N, 3, H, W), integer labels and
the id of each image, so per-image outcomes pair across runs and machines.
Models own their normalization (see ``vitrobust.zoo.wrapper``), so data stays in pixel space
where attack budgets are defined.

The embedded default is scikit-learn's bundled handwritten digits (1,797 8x8 images, shipped
inside the installed ``sklearn`` package, so no download). They are upsampled to 32x32 so that a
patch-4 ViT sees 64 tokens, enough for token pruning to matter. Their splits are a seeded
permutation, so ``limit: N`` takes the first N of an already random order (the default specs'
verdicts are pinned to those images); their ids are the indices into scikit-learn's array.

An ImageFolder (:mod:`vitrobust.imagefolder`) is listed, not decoded: ``limit: N`` picks a fixed,
seeded, class-stratified subset (:mod:`vitrobust.stratify`) and only those images are decoded,
by worker processes, one batch at a time. Its ids are ``<class>/<file>`` and are part of its
fingerprint (the adversarial cache key). Training splits stay lazy (:func:`open_train_split`).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from .defaults import DATA_SOURCE, SPLIT
from .imagefolder import DataError, LazyFolder, decode, index_folder
from .stratify import stratified_subset

SPLITS = ("train", "val", "test")

# Fixed split sizes of the 1,797 digits (the rest is train). Seeded, so every run sees the same.
_DIGITS_VAL, _DIGITS_TEST, _DIGITS_SEED = 250, 450, 0


@dataclass(frozen=True)
class Dataset:
    """Images with their labels and ids, plus a fingerprint naming the exact content.

    ``pixels`` are what the source holds: floats in [0, 1] (the embedded sources) or uint8 in
    0..255 (decoded folder images: a quarter of the memory). :attr:`images` is always floats in
    [0, 1]; models take either (:class:`~vitrobust.zoo.wrapper.ModelWrapper` converts uint8 one
    batch at a time), so scoring never holds a float copy of a folder.
    ``ids_in_fingerprint``: folder images are named by their ids in the fingerprint too; the
    embedded sources leave them out, so their cache keys are what they were before ids existed.
    ``skipped``: ``"id: reason"`` of unreadable images left out (``skip_bad``).
    """

    name: str
    pixels: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    ids: tuple = ()
    ids_in_fingerprint: bool = False
    skipped: tuple = ()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> int:
        return int(self.pixels.shape[-1])

    @property
    def images(self) -> torch.Tensor:
        """Floats in [0, 1] (for uint8 pixels, a new tensor: attacks need the whole set)."""
        return self.images_at(slice(None))

    def images_at(self, index) -> torch.Tensor:
        """Floats in [0, 1] of ``pixels[index]`` (converts only those)."""
        part = self.pixels[index]
        return part if part.is_floating_point() else part.float().div_(255)

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(self.pixels.contiguous().numpy())   # the buffer itself: no copy
        digest.update(self.labels.numpy())
        if self.ids_in_fingerprint:
            digest.update("\n".join(self.ids).encode())
        return digest.hexdigest()[:16]

    def take(self, indices) -> "Dataset":
        indices = torch.as_tensor(indices, dtype=torch.long, device="cpu")
        return Dataset(self.name, self.pixels[indices], self.labels[indices], self.num_classes,
                       tuple(self.ids[i] for i in indices.tolist()), self.ids_in_fingerprint, self.skipped)

    def batches(self, order: torch.Tensor, batch_size: int):
        """``(images, labels)`` per batch of ``order`` (positions): what training iterates."""
        for batch in order.split(batch_size):
            yield self.images_at(batch), self.labels[batch]

    def limit(self, n: int | None) -> "Dataset":
        if n is None or n >= len(self):
            return self
        return self.take(torch.arange(n, device="cpu"))


def load_dataset(source: str = DATA_SOURCE, split: str = SPLIT, limit: int | None = None,
                 image_size: int | None = None, *, skip_bad: bool = False,
                 progress: bool = False) -> Dataset:
    """Load ``split`` of ``source``: ``digits`` (embedded), ``synthetic``, or an ImageFolder path
    (only the ``limit`` images of its stratified subset are decoded)."""
    _check_split(split)
    if source == "digits":
        return _digits(split, image_size or 32).limit(limit)
    if source == "synthetic":
        return _synthetic(split, image_size or 32).limit(limit)
    return load_image_folder(source, split, image_size or 224, limit, skip_bad=skip_bad, progress=progress)


def open_train_split(source: str, image_size: int | None = None):
    """The ``train`` split for fitting: in memory for the embedded sources, a
    :class:`~vitrobust.imagefolder.LazyFolder` (decoded per batch) for a folder."""
    if source in ("digits", "synthetic"):
        return load_dataset(source, "train", image_size=image_size)
    return LazyFolder(index_folder(source, "train"), image_size or 224)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def _split_indices(n: int, split: str, n_val: int, n_test: int, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    bounds = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, n)}
    lo, hi = bounds[split]
    return np.sort(order[lo:hi])


def _digits(split: str, image_size: int) -> Dataset:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no network

    digits = load_digits()
    idx = _split_indices(len(digits.target), split, _DIGITS_VAL, _DIGITS_TEST, _DIGITS_SEED)
    small = torch.tensor(digits.images[idx], dtype=torch.float32, device="cpu").unsqueeze(1) / 16.0
    big = F.interpolate(small, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = big.clamp(0, 1).repeat(1, 3, 1, 1).contiguous()
    labels = torch.tensor(digits.target[idx], dtype=torch.long, device="cpu")
    return Dataset(f"digits/{split}", images, labels, 10, tuple(str(i) for i in idx.tolist()))


def _synthetic(split: str, image_size: int, n: int = 64, num_classes: int = 10) -> Dataset:
    """Seeded noise images with arbitrary labels: for plumbing tests, never for findings."""
    gen = torch.Generator(device="cpu").manual_seed(SPLITS.index(split))
    images = torch.rand(n, 3, image_size, image_size, generator=gen, device="cpu")
    labels = torch.randint(0, num_classes, (n,), generator=gen, device="cpu")
    return Dataset(f"synthetic/{split}", images, labels, num_classes, tuple(str(i) for i in range(n)))


def load_image_folder(path: str | os.PathLike, split: str = "test", image_size: int = 224,
                      limit: int | None = None, *, skip_bad: bool = False,
                      progress: bool = False) -> Dataset:
    """The stratified ``limit`` subset of an ImageFolder's ``split``, decoded (see module doc).

    ``path`` may hold the split folders (``path/val``, ``path/test``) or be the class folders
    themselves. Classes are the sorted sub-folder names, as torchvision's ImageFolder has them.
    """
    index = index_folder(path, split)
    chosen = stratified_subset(index.ids, [index.classes[label] for label in index.labels], limit)
    pixels = torch.empty(len(chosen), 3, image_size, image_size, dtype=torch.uint8, device="cpu")
    kept, skipped = [], []
    for positions, batch, bad in decode(index, chosen, image_size, skip_bad=skip_bad, progress=progress):
        pixels[len(kept):len(kept) + len(positions)] = batch
        kept += positions
        skipped += bad
    if not kept:
        raise DataError(f"{index.root}: none of the {len(chosen)} images selected could be read")
    labels = torch.tensor([index.labels[p] for p in kept], dtype=torch.long, device="cpu")
    return Dataset(f"folder:{index.root}", pixels[:len(kept)], labels, len(index.classes),
                   tuple(index.ids[p] for p in kept), True, tuple(skipped))
