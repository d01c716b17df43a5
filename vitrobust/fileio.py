"""Writing files so that a crash or a refused write never leaves half a file under its final name.

A write the filesystem refuses (a full disk, a read-only folder, no permission) is a
:class:`WriteError`: one line naming the file's final name (never the temporary one) and the
system's reason, ``cannot write /x/reports/report.json: No space left on device``. The temporary
file is removed first, so nothing of the failed write is left behind.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterable

from . import faults
from .errors import VitrobustError


class WriteError(VitrobustError):
    """A file could not be written; ``path`` is its final name, ``errno`` the system's code."""

    def __init__(self, path: str | os.PathLike, reason: OSError | str):
        self.path = Path(path)
        self.errno = getattr(reason, "errno", None)
        why = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        super().__init__(f"cannot write {path}: {why}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it into place.

    The temporary name carries a random uuid, so two processes (on one host or on a shared
    filesystem) never write the same temporary file; it is removed if anything fails, and an
    ``OSError`` (creating the folder, writing, renaming) becomes a :class:`WriteError`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        faults.point("atomic-write")
        os.replace(tmp, path)
    except OSError as exc:
        raise WriteError(path, exc) from exc
    finally:
        _discard(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_text_somewhere(folders: Iterable[str | os.PathLike], name: str, text: str) -> Path:
    """Write ``text`` as ``name`` in the first of ``folders`` that takes it; its path.

    For results that must not be lost when the folder meant for them refuses the write (the
    unfinished record of a run whose report folder is full or read-only): the caller says
    where they went. When every folder refuses, the first folder's :class:`WriteError` is raised.
    """
    errors = []
    for folder in folders:
        try:
            return atomic_write_text(Path(folder) / name, text)
        except WriteError as exc:
            errors.append(exc)
    if not errors:
        raise ValueError("no folder to write to")
    raise errors[0]


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    except OSError:   # never hides the write's own error; a stray temp name is never read
        pass
