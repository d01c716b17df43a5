"""Who began a run, and is that process still there? (A ``running`` row whose process is gone
reads as ``interrupted``: :meth:`vitrobust.store.Store.list_runs`.) No torch, no database."""
from __future__ import annotations

import os
import socket
from pathlib import Path

def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, boot id / start time) of process ``pid`` from Linux's /proc; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()   # after "pid (comm) ": state is field 3
    return fields[0], f"{boot}/{fields[19]}"        # start time: field 22


def this_process() -> dict:
    """What a ``running`` row records of the process that will finish it."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return {"pid": pid, "host": socket.gethostname(), "start": stat and stat[1]}


def process_gone(process) -> bool:
    """Is the process that began a run known to have ended? Only on this host: no process under
    its pid, a zombie, or another process that reuses the pid (its start time differs)."""
    if not isinstance(process, dict) or process.get("host") != socket.gethostname() or os.name == "nt":
        return False   # (os.kill on Windows would end the process, not probe it)
    pid = process.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:   # PermissionError: alive, another user's
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return False
    return stat[0] == "Z" or (process.get("start") is not None and stat[1] != process["start"])
