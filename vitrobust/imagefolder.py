"""ImageNet-style folders, read lazily: ``root/<split>/<class>/<image>``.

Listing a folder decodes nothing. :func:`index_folder` walks the class folders (classes are the
sorted folder names, torchvision's order, so wnid folders get ImageNet's class indices) and
:func:`~vitrobust.stratify.stratified_subset` picks which images a ``limit`` takes. Only those
are decoded, by a :class:`torch.utils.data.DataLoader` whose worker processes decode one batch
at a time (:func:`decode`); :class:`LazyFolder` does the same per training batch, so memory
grows with the batch (and with ``limit`` for the images an attack needs at once), never with
the folder.

Bad data is a one-line :class:`DataError` naming the file or folder: an empty
class folder, a zero-byte or unreadable image, a decompression bomb (more pixels than PIL's
``Image.MAX_IMAGE_PIXELS``: PIL itself only warns up to twice that, and a warning would let the
image through). With ``skip_bad`` unreadable images are skipped and listed instead.
Grayscale, palette, CMYK and RGBA images are converted to RGB (alpha is dropped).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import VitrobustError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
DECODE_BATCH = 32        # images a worker decodes and hands over at once
WORKERS_ENV = "VITROBUST_DATA_WORKERS"


class DataError(VitrobustError):
    """A data source cannot be read; the message is one line and names the path."""


class BadImage(Exception):
    """One image cannot be decoded (the reason is the message); raised inside the decoder."""


@dataclass(frozen=True)
class FolderIndex:
    """The images of one split folder: ids are ``<class>/<file>``, labels index ``classes``."""

    root: Path
    classes: tuple[str, ...]
    ids: tuple[str, ...]
    labels: tuple[int, ...]

    def path(self, position: int) -> Path:
        return self.root / self.ids[position]

    def listing_digest(self, positions=None) -> str:
        """A hash of ids, byte sizes and labels: names a split without decoding it."""
        digest = hashlib.sha256()
        for p in range(len(self.ids)) if positions is None else positions:
            digest.update(f"{self.ids[p]}\0{self.path(p).stat().st_size}\0{self.labels[p]}\n".encode())
        return digest.hexdigest()[:16]


def split_root(path: str | os.PathLike, split: str) -> Path:
    """``path/split`` when it exists (``path/val`` stands in for ``test``), else ``path`` itself."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    for candidate in (root / split, root / ("val" if split == "test" else split)):
        if candidate.is_dir():
            return candidate
    return root


def index_folder(path: str | os.PathLike, split: str = "test") -> FolderIndex:
    """List ``path``'s split folder: every class folder must hold at least one image."""
    root = split_root(path, split)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders (expected {root}/<class>/<image>)")
    ids, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(e.name for e in os.scandir(root / cls)
                       if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError(f"{root / cls}: class folder has no images (every sub-folder of {root} "
                              "is a class: add its images or remove it)")
        ids += [f"{cls}/{f}" for f in files]
        labels += [label] * len(files)
    return FolderIndex(root, tuple(classes), tuple(ids), tuple(labels))


def read_image(path: Path, size: int) -> np.ndarray:
    """``path`` as a ``size`` x ``size`` RGB uint8 array (3, H, W): the short side resized to
    ``size / 0.875`` and center-cropped (the ImageNet eval recipe). Raises :class:`BadImage`."""
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # over MAX_IMAGE_PIXELS (but under twice it) PIL only warns: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"decompression bomb, refused by PIL ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"cannot read image ({exc.__class__.__name__}: {exc})") from None
    short = round(size / 0.875)
    w, h = image.size
    scale = short / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))))
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


class _Decoder(torch.utils.data.Dataset):
    """Decodes the images at ``positions`` of an index; a bad image comes back as its reason."""

    def __init__(self, index: FolderIndex, positions, size: int):
        self.index, self.positions, self.size = index, list(positions), size

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        try:
            return i, torch.from_numpy(read_image(self.index.path(self.positions[i]), self.size)), ""
        except BadImage as exc:
            return i, None, str(exc)


def _as_list(items):   # module level: worker processes may pickle the collate function
    return items


def _on_cpu(loader):
    """Iterate ``loader`` with the CPU as default device: a DataLoader iterator draws its base
    seed into a tensor made on the default device, which may be "meta" or a GPU here."""
    with torch.device("cpu"):
        batches = iter(loader)
    while True:
        with torch.device("cpu"):   # never held across a yield: the caller's device is its own
            items = next(batches, None)
        if items is None:
            return
        yield items


def default_workers(count: int) -> int:
    """Decoding processes: ``$VITROBUST_DATA_WORKERS``, else up to 4 (none for a few images,
    where starting processes costs more than decoding)."""
    if os.environ.get(WORKERS_ENV):
        return max(0, int(os.environ[WORKERS_ENV]))
    return 0 if count < 2 * DECODE_BATCH else min(4, os.cpu_count() or 1)


def decode(index: FolderIndex, positions, size: int, *, skip_bad: bool = False,
           progress: bool = False, batch_order=None, workers: int | None = None):
    """Yield ``(positions, pixels, skipped)`` per batch: uint8 pixels (B, 3, S, S) of the
    positions decoded, and ``"id: reason"`` for each bad image skipped (``skip_bad``; else
    the first bad image is a :class:`DataError`). ``batch_order``: lists of offsets into
    ``positions`` (a training epoch's shuffled batches); by default ``DECODE_BATCH`` in order."""
    decoder = _Decoder(index, positions, size)
    workers = default_workers(len(decoder)) if workers is None else workers
    if batch_order is None:
        batch_order = [range(i, min(i + DECODE_BATCH, len(decoder)))
                       for i in range(0, len(decoder), DECODE_BATCH)]
    loader = torch.utils.data.DataLoader(decoder, batch_sampler=batch_order, num_workers=workers,
                                         collate_fn=_as_list)
    bar = tqdm(total=len(decoder), desc=f"decoding {index.root.name}", unit="img",
               disable=not progress, leave=False)
    with bar:
        for items in _on_cpu(loader):
            kept, images, skipped = [], [], []
            for i, pixels, reason in items:
                image_id = index.ids[decoder.positions[i]]
                if pixels is None:
                    if not skip_bad:
                        raise DataError(f"{index.root / image_id}: {reason} "
                                          "(--vitrobust-skip-bad-images skips unreadable images)")
                    skipped.append(f"{image_id}: {reason}")
                else:
                    kept.append(decoder.positions[i])
                    images.append(pixels)
            bar.update(len(items))
            stacked = (torch.stack(images) if images
                       else torch.empty(0, 3, size, size, dtype=torch.uint8, device="cpu"))
            yield kept, stacked, skipped


@dataclass
class LazyFolder:
    """A training split read per batch (nothing decoded up front): what ``zoo.train.fit``
    iterates with :meth:`batches`. Its fingerprint is the listing (ids, byte sizes, labels):
    hashing the pixels of a training set would take longer than the training."""

    index: FolderIndex
    image_size: int
    skip_bad: bool = False
    progress: bool = False

    @property
    def name(self) -> str:
        return f"folder:{self.index.root}"

    @property
    def num_classes(self) -> int:
        return len(self.index.classes)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor(self.index.labels, dtype=torch.long, device="cpu")

    def __len__(self) -> int:
        return len(self.index.ids)

    @property
    def fingerprint(self) -> str:
        return self.index.listing_digest()

    def batches(self, order: torch.Tensor, batch_size: int):
        """``(images, labels)`` per batch of ``order`` (positions), decoded by worker processes."""
        batch_order = [b.tolist() for b in order.split(batch_size)]
        labels = self.labels
        for kept, pixels, _ in decode(self.index, range(len(self)), self.image_size,
                                      skip_bad=self.skip_bad, batch_order=batch_order):
            yield pixels.float().div_(255), labels[torch.as_tensor(kept, dtype=torch.long, device="cpu")]
