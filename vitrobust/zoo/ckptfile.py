"""Is a path something a checkpoint can be read from? Asked before ``torch.load`` opens it.

``torch.load`` on a folder, a FIFO or a device fails late or, for a FIFO, blocks forever; a
symlink loop reads as "no such file" to ``Path.is_file``; an empty file is a truncated download.
Each is named here in words, so the zoo config can refuse it when it is read (naming the file and
the key) and the loader can refuse it again if it changed since. No torch.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["checkpoint_file_problem"]


def checkpoint_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a checkpoint file, or None when it is a readable, non-empty file."""
    path = Path(path).expanduser()
    try:
        info = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop (the link resolves to itself)"
        if exc.errno == errno.ENOENT:
            return "no such checkpoint file" + (" (a dangling symlink)" if path.is_symlink() else "")
        return f"cannot read it ({exc.strerror or exc.__class__.__name__})"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not a checkpoint file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a pipe, socket or device)"
    if info.st_size == 0:
        return "empty file (0 bytes): an interrupted download or copy?"
    if not os.access(path, os.R_OK):
        return "cannot read it (permission denied)"
    return None
