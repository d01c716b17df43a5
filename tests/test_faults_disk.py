"""Full disks and read-only folders, by fault injection (the tests run as root, so chmod alone
would not stop a write).

:func:`refuse_writes` makes the filesystem refuse writes under one folder, the way the kernel
does: with ``ENOSPC`` a file opens and then a write stops halfway (a full disk); with ``EROFS``
or ``EACCES`` nothing is created, opened for writing, renamed or made a folder there (a
read-only folder). Reads are untouched.

- ``vitrobust/fileio.py``: a refused write is one line naming the final path and the reason, the
  temporary file is gone, and whatever was under the final name before is intact.
- The caches (models, adversarial sets, predictions, the UAP ``.npy``): a refused write is a
  ``WriteError``, one line naming the file; nothing partial is left, and once the disk takes
  writes again the entry is made and stored. In a session it stops the run after that check
  (``vitrobust/collect.py``), keeping the checks decided before it.
- End to end: a pytest run of a spec whose report write fails ends with one line naming
  ``report.json`` and the reason, and its results are in ``reports/unfinished-*.json``; when the
  whole report folder is read-only they are in the temp folder, and the line says so.
"""
import errno
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_cache_corruption import Adversarial, Models, Perturbation, Predictions, Timings
from vitrobust import adversarial
from vitrobust.fileio import WriteError, atomic_write, atomic_write_text, write_text_somewhere

ROOT = Path(__file__).resolve().parents[1]
WRITE_MODES = set("wax+")


class _Full:
    """A file on a full disk: each write stores half of what it was given, then fails."""

    def __init__(self, fh, path):
        self._fh, self._path = fh, path

    def write(self, data):
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(self._path))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()

    def __getattr__(self, name):
        return getattr(self._fh, name)


def refuse_writes(patch, under, err: int, names: tuple = ()) -> None:
    """Refuse writes under folder ``under`` with ``err`` (see the module docstring); ``names``:
    only files whose name holds one of these strings (a temp name holds its final one).
    ``patch(obj, attr, value)`` is ``monkeypatch.setattr``, or ``setattr`` in a subprocess."""
    under = os.path.realpath(under)
    real_open, real_os_open, real_replace, real_mkdir = io.open, os.open, os.replace, os.mkdir

    def hit(path) -> bool:
        if isinstance(path, int):
            return False
        full = os.path.realpath(os.fsdecode(path))
        inside = full == under or full.startswith(under + os.sep)
        return inside and (not names or any(n in os.path.basename(full) for n in names))

    def refuse(path):
        raise OSError(err, os.strerror(err), os.fsdecode(path))

    def open_(file, mode="r", *args, **kwargs):
        if WRITE_MODES & set(mode) and hit(file):
            if err != errno.ENOSPC:
                refuse(file)
            return _Full(real_open(file, mode, *args, **kwargs), file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):   # lock files; a full disk still creates an empty file
        if err != errno.ENOSPC and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and hit(path):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if err != errno.ENOSPC and hit(dst):
            refuse(dst)
        return real_replace(src, dst, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if err != errno.ENOSPC and hit(path):
            if os.path.exists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(path))
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    import builtins

    for module, name, value in ((io, "open", open_), (builtins, "open", open_), (os, "open", os_open),
                                (os, "replace", replace), (os, "rename", replace), (os, "mkdir", mkdir)):
        patch(module, name, value)


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# -- fileio ------------------------------------------------------------------------------------
@pytest.mark.parametrize("err, reason", [(errno.ENOSPC, "No space left on device"),
                                         (errno.EROFS, "Read-only file system"),
                                         (errno.EACCES, "Permission denied")])
def test_a_refused_write_is_one_line_naming_the_final_path_and_leaves_nothing(tmp_path, monkeypatch, err, reason):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "kept.json").write_text("before")
    refuse_writes(monkeypatch.setattr, folder, err)
    for name in ("kept.json", "new.json", "sub/new.json"):   # over a file, a new file, a new folder
        with pytest.raises(WriteError) as info:
            atomic_write_text(folder / name, "x" * 10_000)
        assert str(info.value) == f"cannot write {folder / name}: {reason}"
        assert info.value.errno == err and info.value.path == folder / name
    assert _leftovers(folder) == ["kept.json"] and (folder / "kept.json").read_text() == "before"


def test_a_write_that_fails_for_another_reason_still_removes_its_temporary_file(tmp_path):
    def half_then_crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("the serializer broke")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.bin", half_then_crash)
    assert _leftovers(tmp_path) == []


def test_results_go_to_the_next_folder_that_takes_them(tmp_path, monkeypatch):
    reports, spare = tmp_path / "reports", tmp_path / "spare"
    refuse_writes(monkeypatch.setattr, reports, errno.EROFS)
    path = write_text_somewhere([reports, spare], "unfinished-1.json", "{}")
    assert path == spare / "unfinished-1.json" and path.read_text() == "{}"
    refuse_writes(monkeypatch.setattr, spare, errno.ENOSPC)
    with pytest.raises(WriteError, match=re.escape(f"cannot write {reports / 'x.json'}: Read-only")):
        write_text_somewhere([reports, spare], "x.json", "{}")


# -- the caches --------------------------------------------------------------------------------
KINDS = {"model": Models, "adversarial": Adversarial, "predictions": Predictions, "timings": Timings}
FAULTS = {"full-disk-at-the-blob": (errno.ENOSPC, (".pt", ".timing.json")),   # tensors, timings
          "full-disk-at-the-manifest": (errno.ENOSPC, (".json",)),
          "read-only-folder": (errno.EROFS, ())}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind_name", KINDS)
def test_a_cache_that_refuses_the_write_is_one_line_naming_the_file(kind_name, fault, tmp_path, monkeypatch):
    cls = KINDS[kind_name]
    kind = cls(monkeypatch) if cls is Models else cls()
    root, calls = tmp_path / "cache", []
    root.mkdir()
    err, names = FAULTS[fault]
    with monkeypatch.context() as faulty:
        refuse_writes(faulty.setattr, root, err, names)
        with pytest.raises(WriteError) as refused:
            kind.run(root, calls)
    assert len(calls) == 1
    assert re.fullmatch(rf"cannot write {re.escape(str(root))}/\S+: {re.escape(os.strerror(err))}", str(refused.value))
    assert not [p for p in _leftovers(root) if p.endswith((".tmp", ".json"))]   # no manifest: nothing committed
    # the disk takes writes again: the entry is made once more, stored, and then read
    assert kind.same(kind.run(root, calls), kind.value()) and len(calls) == 2
    assert kind.same(kind.run(root, calls), kind.value()) and len(calls) == 2


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_a_uap_file_that_cannot_be_written_is_one_line_and_is_written_later(tmp_path, monkeypatch, err):
    kind = Perturbation(monkeypatch)
    path, _ = kind.files(tmp_path)
    with monkeypatch.context() as faulty:
        refuse_writes(faulty.setattr, tmp_path, err)
        with pytest.raises(WriteError) as refused:
            adversarial._save_delta(tmp_path / "artifacts", kind.KEY, kind.value())
    assert str(refused.value) == f"cannot write {path}: {os.strerror(err)}" and not path.exists()
    assert not list(tmp_path.rglob("*.tmp"))
    assert kind.same(kind.run(tmp_path, []), kind.value().squeeze(0).numpy())


# -- end to end: the session's report ----------------------------------------------------------
SPEC = """\
id: tiny
about: one shipped model, nothing trained or attacked
checks:
  - params(deit_tiny) > 100000
"""

PLUGIN = """\
import errno, os, sys
sys.path.insert(0, {tests!r})
from test_faults_disk import refuse_writes
refuse_writes(setattr, {under!r}, errno.{err}, {names!r})
"""


def _run_spec(tmp_path, under, err, names=(), spec=SPEC, **env_extra):
    """``pytest`` on one spec in a subprocess, with writes under ``under`` refused."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "tiny.yaml").write_text(spec)
    (tmp_path / "diskfault.py").write_text(PLUGIN.format(tests=str(ROOT / "tests"), under=str(under),
                                                        err=err, names=names))
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")])),
               TMPDIR=str(tmp_path / "tmp"), **env_extra)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "diskfault", "-p", "no:randomly", "-p", "no:cacheprovider",
         str(tmp_path / "specs" / "tiny.yaml"), "--vitrobust-no-progress",
         f"--vitrobust-report-dir={tmp_path / 'reports'}", f"--vitrobust-db={tmp_path / 'db.sqlite'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return result, result.stdout + result.stderr


def _saved(out: str) -> Path:
    [line] = [l for l in out.splitlines() if "cannot write" in l]
    match = re.search(r"raw results saved to (\S+\.json)$", line)
    assert match, line
    return Path(match[1])


def test_a_full_disk_at_the_report_ends_the_run_in_one_line_and_keeps_the_results(tmp_path):
    reports = tmp_path / "reports"
    result, out = _run_spec(tmp_path, reports, "ENOSPC", ("report.json",))
    assert result.returncode == 3, out[-3000:]                       # pytest's INTERNAL_ERROR exit
    assert "Traceback" not in out and "INTERNALERROR" not in out
    assert re.search(rf"cannot write {re.escape(str(reports))}/[\w-]+/report\.json: No space left on device", out)
    saved = _saved(out)
    assert saved.parent == reports and saved.name.startswith("unfinished-")
    record = json.loads(saved.read_text())
    assert [c["check"] for c in record["checks"]] == ["params(deit_tiny) > 100000"]
    assert record["checks"][0]["status"] == "holds" and record["measurements"]
    assert not list(reports.rglob("report.json")) and not list(reports.rglob("*.tmp"))


def test_a_read_only_report_folder_sends_the_results_to_the_temp_folder(tmp_path):
    reports = tmp_path / "reports"
    result, out = _run_spec(tmp_path, reports, "EROFS")
    assert result.returncode == 3, out[-3000:]
    assert "Traceback" not in out and "INTERNALERROR" not in out
    assert re.search(rf"cannot write {re.escape(str(reports))}\S*: Read-only file system", out)
    saved = _saved(out)
    assert saved.parent == tmp_path / "tmp"                           # $TMPDIR, and the line says so
    assert json.loads(saved.read_text())["checks"][0]["status"] == "holds"
    assert not reports.exists() or _leftovers(reports) == []


ATTACKED = """\
id: attacked
about: a check, then one that writes an adversarial set, then one more
data: {limit: 8}
attacks:
  fgsm: {name: fgsm, eps: 2/255}
checks:
  - params(deit_tiny) > 100000
  - asr(deit_tiny, fgsm) >= 0
  - gflops(deit_tiny) > 0
"""


def test_a_read_only_cache_stops_the_session_after_that_check_and_keeps_the_ones_before(tmp_path):
    cache = tmp_path / "cache"
    result, out = _run_spec(tmp_path, cache / "adversarial", "EROFS", spec=ATTACKED, VITROBUST_CACHE=str(cache))
    assert result.returncode == 2, out[-3000:]                        # pytest's INTERRUPTED
    assert "Traceback" not in out and "INTERNALERROR" not in out
    assert re.search(rf"Interrupted: cannot write {re.escape(str(cache))}/adversarial/\S+: Read-only file system "
                     r"\(the checks decided before it are kept\)", out), out[-3000:]
    report = tmp_path / "reports" / "latest" / "report.json"
    checks = {c["check"]: c["status"] for c in json.loads(report.read_text())["checks"]}
    assert checks == {"params(deit_tiny) > 100000": "holds", "asr(deit_tiny, fgsm) >= 0": "error"}
    assert not [p for p in _leftovers(cache / "adversarial") if p.endswith((".tmp", ".json"))]
