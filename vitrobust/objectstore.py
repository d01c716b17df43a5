"""Cache roots on an fsspec URL: ``s3://bucket/vitrobust``, ``gs://...``, ``memory://`` (tests).

``$VITROBUST_CACHE`` (and so the model and adversarial caches) may be a local path, a
``file://`` URL (the same local folder: the local code path of :mod:`vitrobust.blobstore`, with
its renames and ``flock`` locks) or any other URL fsspec can open, with its backend installed
(``pip install s3fs`` / ``gcsfs``). :func:`open_store` picks the store.

On an object store the entry protocol of :mod:`vitrobust.blobstore` stays, with what such a
store offers instead of renames and locks:

- a blob is one object named by its sha256, written with one PUT, which an object store makes
  visible whole or not at all; a blob already there is rewritten only if its bytes do not hash
  to its name;
- the manifest, the commit point, is *created exclusively*: ``pipe_file(mode="create")``. The
  first writer wins and a later writer's manifest is dropped (it names a blob of the same entry,
  so nothing is lost but its work). Where the backend implements that mode as a conditional
  write (s3fs and gcsfs send ``If-None-Match: *`` / ``ifGenerationMatch=0``; the memory store
  checks and creates in one step) it is atomic. Where a backend only has fsspec's default (a
  look, then a write), two writers in the same instant can both write; the second manifest
  replaces the first, and each names a whole, checksummed blob, so a reader still gets one
  whole entry;
- there are no locks: processes that need the same missing entry may both compute it. Each then
  goes on with the committed entry, not its own (:meth:`BlobStore.get_or_create`), so a run uses
  one set of bytes everywhere. The distributed executor (:mod:`vitrobust.executor_ray`) runs each
  unit once, which is what keeps work from being doubled there;
- a damaged entry (torn, altered or missing blob) is removed by the reader that finds it if the
  manifest still reads the same, then rebuilt. An object store has no compare-and-delete, so a
  writer that re-commits between that look and the delete loses its entry: it is made again,
  never read wrong.
"""
from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .blobstore import BlobStore

log = logging.getLogger(__name__)


class CacheURL(str):
    """A cache root given as a URL; ``/`` joins like a path (``CacheURL("s3://b") / "models"``)."""

    def __truediv__(self, part) -> "CacheURL":
        return CacheURL(f"{self.rstrip('/')}/{str(part).strip('/')}")


def is_url(root) -> bool:
    return isinstance(root, str) and "://" in root


def as_root(root) -> Path | CacheURL:
    """A local ``Path`` for a path or a ``file://`` URL, else a :class:`CacheURL`."""
    if isinstance(root, CacheURL) or not is_url(root):
        return root if isinstance(root, CacheURL) else Path(root)
    if root.startswith("file://"):
        return Path(root[len("file://"):])
    return CacheURL(root)


def open_store(root, *, suffix: str = "", what: str = "cache entry") -> BlobStore:
    """The store under ``root``: local files, or an object store for a non-file URL."""
    root = as_root(root)
    if isinstance(root, CacheURL):
        return ObjectBlobStore(root, suffix=suffix, what=what)
    return BlobStore(root, suffix=suffix, what=what)


class ObjectBlobStore(BlobStore):
    """:class:`BlobStore` on an fsspec file system (see the module docstring for the guarantees)."""

    def __init__(self, root: str, *, suffix: str = "", what: str = "cache entry"):
        import fsspec

        self.root, self.suffix, self.what = CacheURL(root), suffix, what
        self.fs, path = fsspec.core.url_to_fs(str(root))
        self._base = path.rstrip("/")

    # paths, as URLs for messages; _path() is what the file system is asked about
    def manifest_path(self, name: str) -> CacheURL:
        return self.root / f"{name}.json"

    def lock_path(self, name: str) -> CacheURL:
        return self.root / f"{name}.lock"   # never created: an object store has no locks

    def blob_path(self, digest: str) -> CacheURL:
        return self.root / "blobs" / digest[:2] / f"{digest}{self.suffix}"

    def _path(self, url: str) -> str:
        return f"{self._base}/{url[len(self.root.rstrip('/')):].lstrip('/')}"

    def has(self, name: str) -> bool:
        return self.fs.exists(self._path(self.manifest_path(name)))

    # -- the object operations ---------------------------------------------------------------
    def _write_blob(self, digest: str, data: bytes) -> None:
        path = self._path(self.blob_path(digest))
        there = self._cat(path)   # re-putting an entry is rare, so reading the blob back is fine
        if there is not None and hashlib.sha256(there).hexdigest() == digest:
            return
        self.fs.pipe_file(path, data)

    def _commit(self, name: str, text: str) -> None:
        path = self._path(self.manifest_path(name))
        try:
            self.fs.pipe_file(path, text.encode(), mode="create")
        except FileExistsError:   # first writer wins: the committed entry stays
            log.info("%s %s was committed by another writer first", self.what, self.manifest_path(name))
        except TypeError:   # an fsspec before pipe_file(mode=...): look, then write
            if not self.fs.exists(path):
                self.fs.pipe_file(path, text.encode())

    def _read_manifest(self, name: str) -> tuple[bytes, bytes] | None:
        raw = self._cat(self._path(self.manifest_path(name)))
        return None if raw is None else (raw, raw)   # no file ids here: the bytes identify it

    def _read_blob(self, digest: str) -> bytes | None:
        return self._cat(self._path(self.blob_path(digest)))

    def _remove_manifest(self, name: str, read_id) -> None:
        path = self._path(self.manifest_path(name))
        if self._cat(path) == read_id:   # only the manifest that was read
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                pass

    @contextmanager
    def lock(self, name: str) -> Iterator[bool]:
        yield False   # no locks on an object store: see the module docstring

    def _cat(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None
