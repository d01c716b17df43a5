"""The one entry protocol of the on-disk caches (adversarial sets, trained models, predictions):
safe when several processes read and write one cache at once, on one machine or on many machines
that share a filesystem.

An entry ``name`` is two files under the store's root:

- a *blob*, ``blobs/<h[:2]>/<h><suffix>``: the entry's bytes, named by their sha256 ``h``. It is
  written to a uuid-named temporary file beside it and renamed into place (``os.replace``), and
  nothing here deletes or changes a blob afterwards (re-putting the same bytes renames an
  identical file over it), so a blob a manifest names stays readable;
- a *manifest*, ``<name>.json``: the entry's own name, the blob's hash and size and the caller's
  metadata, written the same way *after* the blob. Its rename is the commit point. A reader
  reads the manifest, then the blob it names: it gets a whole entry (the old one or the new one,
  never a mix of two writers), and once an entry is committed it is never reported missing.

A reader checks the blob's size and sha256 against the manifest, and that the manifest names this
entry (another entry's manifest copied over it would otherwise hand out that entry's bytes). A
torn, altered, foreign or missing blob, a foreign manifest and an unreadable one are one warning
line naming the file at fault; the manifest is removed (if it is still the one read) and the entry
reads as missing, so it is rebuilt. (Manifests written before the name was recorded are trusted
on their checksum alone.) Temporary names hold a uuid, unique across processes and hosts; a
temporary file a crashed writer left is never read (readers open only manifests and the blobs
they name).

:meth:`BlobStore.get_or_create` looks, then takes the entry's lock (``<name>.lock``, a
:class:`filelock.FileLock`: one lock per entry, never a global one) and looks again inside it, so
processes that need the same entry make it once: the others wait, then read what it wrote.
A dead holder never blocks anyone: filelock's lock is ``flock(2)``, which the kernel releases when
the holding process exits or is killed (on NFS, Linux maps ``flock`` to NFS byte-range locks,
dropped by the server when the client goes away). Where a filesystem has no ``flock`` at all,
filelock 4 falls back to a lock file and breaks one whose owner process is gone. A *live* holder
is waited for without limit by default (training a model can take hours): ``$VITROBUST_LOCK_TIMEOUT``
(seconds) bounds the wait, after which the waiter logs a warning and makes the entry itself.
That is safe (the protocol above does not need the lock), it only loses the make-once guarantee,
as can an NFS client's attribute cache hiding a just-committed manifest from the next holder for
a few seconds (``lookupcache``): then an entry is made twice, and each reader still gets a whole one.
Whoever made an entry without the lock goes on with what is committed, not with what it made, so
every process of a run uses the same bytes.

A write the filesystem refuses (a full disk, a read-only cache folder) raises
:class:`vitrobust.fileio.WriteError` from :meth:`BlobStore.put`, with nothing left under a final
name; a lock file that cannot be created is a warning, and the entry is made without the lock.
The caches built on this store catch the error in their ``make`` and go on with what was made,
uncached (a cache that cannot be written makes a run slower, it never loses or alters a result).

The file operations are a few small methods (``_write_blob``, ``_commit``, ``_read_manifest``,
``_read_blob``, ``_remove_manifest``, ``lock``); :mod:`vitrobust.objectstore` overrides them for
a cache root on an fsspec URL (``s3://``, ``gs://``, ``memory://``), where there is no rename and
no lock, and the manifest is created exclusively instead (the first writer wins).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import filelock

from . import faults
from .errors import VitrobustError
from .fileio import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

PROTOCOL = 1                           # the manifest layout below; older entries read as missing
RESERVED = ("protocol", "entry", "blob", "size")
LOCK_TIMEOUT_ENV = "VITROBUST_LOCK_TIMEOUT"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_WRITTEN: dict[str, str] = {}   # manifest -> the blob this process last put there (any store object)

T = TypeVar("T")


class BlobStore:
    """Entries ``name`` (a relative path without suffix, ``ab/abcdef...``) under ``root``."""

    def __init__(self, root: str | os.PathLike, *, suffix: str = "", what: str = "cache entry"):
        self.root, self.suffix, self.what = Path(root), suffix, what

    # -- paths -------------------------------------------------------------------------------
    def manifest_path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def lock_path(self, name: str) -> Path:
        return self.root / f"{name}.lock"

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / digest[:2] / f"{digest}{self.suffix}"

    # -- write -------------------------------------------------------------------------------
    def put(self, name: str, data: bytes, meta: dict | None = None) -> dict:
        """Store ``data`` as entry ``name``: the blob first, then the manifest (the commit).
        A refused write raises :class:`~vitrobust.fileio.WriteError` naming the file."""
        meta = dict(meta or {})
        if clash := set(meta) & set(RESERVED):
            raise ValueError(f"manifest keys {sorted(clash)} are the store's own")
        digest = hashlib.sha256(data).hexdigest()
        self._write_blob(digest, data)
        faults.point("cache-blob-written")
        manifest = {**meta, "protocol": PROTOCOL, "entry": name, "blob": digest, "size": len(data)}
        _WRITTEN[str(self.manifest_path(name))] = digest
        self._commit(name, json.dumps(manifest, indent=2, sort_keys=True, default=str))
        return manifest

    # -- read --------------------------------------------------------------------------------
    def get(self, name: str, decode: Callable[[bytes], object] | None = None) -> tuple[object, dict] | None:
        """``(bytes, manifest)`` of the committed entry, or None when there is none or it is
        damaged (then it is logged, and the manifest removed so that the entry is rebuilt).

        ``decode`` turns the bytes into the caller's value, returned instead of them: when it
        raises, the blob is whole but not what this cache holds (another file under a good
        checksum), and the entry is damaged like any other: one warning line, rebuilt."""
        found = self._read_manifest(name)
        if found is None:
            return None
        raw, read_id = found
        path = self.manifest_path(name)
        try:
            manifest = json.loads(raw)
        except ValueError:
            manifest = None
        if not isinstance(manifest, dict):
            return self._unusable(name, read_id, "the manifest is not JSON")
        if manifest.get("protocol") != PROTOCOL:   # an older cache layout: a miss, overwritten on put
            log.info("%s %s has an older layout; it will be rebuilt", self.what, path)
            return None
        digest, size = manifest.get("blob"), manifest.get("size")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest) or not isinstance(size, int):
            return self._unusable(name, read_id, "the manifest names no blob")
        if manifest.get("entry", name) != name:
            return self._unusable(name, read_id, f"the manifest is another entry's, {manifest['entry']!r}")
        data = self._read_blob(digest)
        blob = self.blob_path(digest)
        if data is None:
            return self._unusable(name, read_id, f"its blob {blob} is missing")
        if len(data) != size:   # shorter: a write cut off; longer: another file under its name
            what = "torn blob" if len(data) < size else "blob"
            return self._unusable(name, read_id, f"{what} {blob}: {len(data)} bytes, the manifest says {size}")
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            return self._unusable(name, read_id, f"checksum mismatch: blob {blob} holds {actual[:12]}")
        if decode is not None:
            try:
                data = decode(data)
            except Exception as exc:   # noqa: BLE001 - any failure to decode: not this cache's entry
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                return self._unusable(name, read_id, f"blob {blob} does not decode: {first}")
        return data, manifest

    def has(self, name: str) -> bool:
        """Is entry ``name`` committed (its manifest exists)? Cheap: neither manifest nor blob
        is read or checked, so a damaged entry counts until a :meth:`get` finds the damage."""
        return self.manifest_path(name).exists()

    def _unusable(self, name: str, read_id, problem: str) -> None:
        log.warning("%s %s is unusable (%s); rebuilding it", self.what, self.manifest_path(name), problem)
        self._remove_manifest(name, read_id)
        return None

    # -- the files (an object store overrides these: vitrobust/objectstore.py) ---------------
    def _write_blob(self, digest: str, data: bytes) -> None:
        blob = self.blob_path(digest)
        if not _holds(blob, digest, len(data)):   # absent, or a damaged copy: (re)write it
            atomic_write(blob, lambda tmp: tmp.write_bytes(data))

    def _commit(self, name: str, text: str) -> None:
        atomic_write_text(self.manifest_path(name), text)

    def _read_manifest(self, name: str) -> tuple[bytes, tuple] | None:
        """The manifest's bytes and an id of the file read (None: no manifest)."""
        try:
            with open(self.manifest_path(name), "rb") as fh:
                return fh.read(), _file_id(os.fstat(fh.fileno()))
        except FileNotFoundError:
            return None

    def _read_blob(self, digest: str) -> bytes | None:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            return None

    def _remove_manifest(self, name: str, read_id) -> None:
        path = self.manifest_path(name)
        try:   # only the manifest that was read: a writer may have committed a good one since
            if _file_id(os.stat(path)) == read_id:
                path.unlink()
        except FileNotFoundError:
            pass

    # -- make once ---------------------------------------------------------------------------
    @contextmanager
    def lock(self, name: str) -> Iterator[bool]:
        """Hold entry ``name``'s lock (True), or, past ``$VITROBUST_LOCK_TIMEOUT`` or when the
        lock file cannot be created, go on without it (False, with a warning)."""
        path = self.lock_path(name)
        lock = filelock.FileLock(str(path))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            acquired = _acquire(lock, f"{self.what} {name}")
        except OSError as exc:   # a read-only or full cache folder: the entry's write will say so too
            log.warning("cannot lock %s %s: %s; making it without the lock", self.what, path, exc.strerror or exc)
            acquired = False
        if not acquired:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def get_or_create(self, name: str, look: Callable[[], T | None], make: Callable[[], T]) -> tuple[T, bool]:
        """``(look(), False)`` when entry ``name`` is there, else ``(make(), True)``, made by one
        process at a time: the lock is taken only on a miss, and ``look`` runs again inside it.
        ``look`` reads the entry (None: missing or unusable); ``make`` computes and puts it.

        Without the lock (past the timeout, or an object store, which has none) another process
        may have committed the entry too; then what is committed is returned, ``(look(), False)``
        when it is not what ``make`` wrote, so every process goes on with the same bytes."""
        found = look()
        if found is not None:
            return found, False
        with self.lock(name) as held:
            found = look()   # another process may have made it while this one waited
            if found is not None:
                return found, False
            made = make()
            if held or self.committed_blob(name) in (None, _WRITTEN.get(str(self.manifest_path(name)))):
                return made, True
            committed = look()
            return (made, True) if committed is None else (committed, False)

    def committed_blob(self, name: str) -> str | None:
        """The blob hash entry ``name``'s manifest names (None: no readable manifest)."""
        found = self._read_manifest(name)
        try:
            return json.loads(found[0]).get("blob") if found else None
        except (ValueError, AttributeError):
            return None


def _acquire(lock: filelock.FileLock, what: str) -> bool:
    try:
        lock.acquire(timeout=0)
        return True
    except filelock.Timeout:
        pass
    timeout = lock_timeout()
    log.info("waiting for another process making %s (lock %s)", what, lock.lock_file)
    try:
        lock.acquire(timeout=-1 if timeout is None else timeout)
        return True
    except filelock.Timeout:
        log.warning("%s: still locked by another process after %ss (%s); making it without the lock",
                    what, timeout, lock.lock_file)
        return False


def lock_timeout() -> float | None:
    """``$VITROBUST_LOCK_TIMEOUT`` in seconds, or None (wait as long as the holder lives)."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise VitrobustError(f"${LOCK_TIMEOUT_ENV}={raw!r}: give seconds as a number, or leave it unset "
                             "to wait for the lock's holder") from None
    return max(value, 0.0)


def dumps(tensors) -> bytes:
    """``torch.save`` bytes (deterministic: the same tensors give the same bytes, hence blob)."""
    import torch

    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def loads(data: bytes):
    """Tensors back from :func:`dumps` bytes, on the CPU; no pickled code runs (anything but
    tensors and plain containers is a ``ValueError`` in one line)."""
    import pickle

    import torch

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:   # torch explains in a paragraph; the gist is one line
        raise ValueError("it pickles objects other than tensors (refused by torch.load weights_only=True)") from None


def _holds(blob: Path, digest: str, size: int) -> bool:
    try:
        if blob.stat().st_size != size:
            return False
        return hashlib.sha256(blob.read_bytes()).hexdigest() == digest
    except FileNotFoundError:
        return False


def _file_id(stat: os.stat_result) -> tuple:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns
