"""A small real job to kill and resume: tiny models, one spec, its own cache, reports and DB.

:class:`Job` is a folder with ``specs/kr.yaml``, a ``conftest.py`` registering two tiny models
(trained in about a second on the embedded digits), ``cache/`` (``VITROBUST_CACHE``),
``reports/`` (reports and ``vitrobust.sqlite``) and one fault log per run
(``VITROBUST_FAULT_LOG``, :mod:`vitrobust.faults`). :meth:`Job.run` runs ``pytest specs`` on it
in another process, optionally killed at a fault point; :func:`final_names_whole` checks that
nothing under a final name is partial.

Runs are forked from a *zygote*, this file run as a script: a process that has imported torch,
timm, foolbox, matplotlib and vitrobust once and forks one child per run. Those imports take
longer than this job's work (measured here: a warm run forked in 6 s, the same run as a new
process in 21 s), and a kill test needs two runs per kill point. The zygote computes nothing before forking (no torch thread pool to inherit);
each child sets its environment, re-reads the fault variables and runs ``pytest.main``, so it
is a fresh session in a fresh process, killed by the kernel like any other.
:meth:`Job.run_fresh` starts a plain ``python -m pytest`` instead (the tests compare the two).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT = 300   # seconds for one run; a run that hangs is a failure, not a wait

CONFTEST = '''\
from vitrobust.zoo.cnn import SmallCNN
from vitrobust.zoo.deit import _small_vit
from vitrobust.zoo.registry import register_model

RECIPE = {"epochs": 4, "lr": 3e-3, "batch_size": 32, "augment": False, "weight_decay": 0.05,
          "label_smoothing": 0.0, "warmup_epochs": 0, "seed": 0}


@register_model(recipe=RECIPE)
def kr_vit(**kwargs):
    """A 1-block ViT of width 32: trained in about a second."""
    return _small_vit(32, 1, 2, **kwargs)


@register_model(family="cnn", recipe={**RECIPE, "epochs": 3, "lr": 1e-2, "weight_decay": 5e-4})
def kr_cnn(num_classes: int = 10, **kwargs):
    """A CNN of width 4: the transfer source."""
    return SmallCNN(num_classes=num_classes, width=4)
'''

SPEC = """\
id: kr
about: a small job to kill and resume
data: {split: test, limit: 40}
attacks:
  fgsm: {name: fgsm, eps: 8/255}
  pgd: {name: pgd, eps: 8/255, steps: 3}
checks:
  - asr(kr_vit, pgd) >= asr(kr_vit, fgsm)
  - acc(kr_vit) > 0.15
  - transfer(kr_cnn -> kr_vit, fgsm) <= asr(kr_vit, pgd)
  - size_mb(kr_vit:int8) < size_mb(kr_vit)
"""
CHECKS = 4

ARGS = ["specs", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--vitrobust-no-progress",
        "-W", "ignore::pytest.PytestAssertRewriteWarning",
        "--vitrobust-report-dir=reports"]


class Run:
    """One finished (or killed) run: its exit code (-9: SIGKILL), output and fault log."""

    def __init__(self, code: int, out: str, log: list[str]):
        self.code, self.out, self.log = code, out, log

    def count(self, point: str) -> int:
        return self.log.count(point)


class Job:
    """The job's folder; ``cache`` may be shared with another job (then nothing is trained)."""

    def __init__(self, root: Path, cache: Path | None = None):
        self.root = Path(root)
        self.cache = Path(cache) if cache else self.root / "cache"
        self.reports = self.root / "reports"
        self.db = self.reports / "vitrobust.sqlite"
        (self.root / "specs").mkdir(parents=True, exist_ok=True)
        (self.root / "specs" / "kr.yaml").write_text(SPEC)
        (self.root / "conftest.py").write_text(CONFTEST)
        self.runs = 0

    def env(self, fault: str | None, log: Path) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("VITROBUST_", "PYTEST_")) and k != "PYTHONPATH"}
        env.update(VITROBUST_CACHE=str(self.cache), VITROBUST_FAULT_LOG=str(log), OMP_NUM_THREADS="1")
        if fault:
            env["VITROBUST_FAULT"] = fault
        return env

    def _paths(self) -> tuple[Path, Path]:
        self.runs += 1
        return self.root / f"run{self.runs}.out", self.root / f"run{self.runs}.log"

    def run(self, zygote: "Zygote", fault: str | None = None) -> Run:
        out, log = self._paths()
        code = zygote.run({"cwd": str(self.root), "env": self.env(fault, log), "args": ARGS,
                           "output": str(out), "timeout": TIMEOUT})
        return _finished(code, out, log)

    def run_fresh(self, fault: str | None = None) -> Run:
        out, log = self._paths()
        with open(out, "w") as fh:
            proc = subprocess.run([sys.executable, "-m", "pytest", *ARGS], cwd=self.root,
                                  env=self.env(fault, log), stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=TIMEOUT)
        return _finished(proc.returncode, out, log)


def _finished(code: int, out: Path, log: Path) -> Run:
    lines = log.read_text().split() if log.exists() else []
    return Run(code, out.read_text(errors="replace"), lines)


# -- nothing under a final name is partial ------------------------------------------------------
PNG_END = b"IEND\xaeB`\x82"


def final_names_whole(job: Job) -> dict:
    """Check every file a reader may open: each cache manifest parses and its blob's size and
    sha256 hold; each report file is whole (JSON parses as a run record, HTML closes, PNG ends
    with IEND); ``latest`` names a folder holding a report; the database passes SQLite's
    integrity check. Temporary names (``.<name>.<uuid>.tmp``) are nobody's result and are left
    out. Returns counts of what was checked; raises AssertionError naming the first bad file."""
    from vitrobust.record import RunRecord

    seen = {"manifests": 0, "reports": 0, "temporary": 0}
    for path in sorted(job.cache.rglob("*")):
        if path.name.startswith("."):
            seen["temporary"] += path.name.endswith(".tmp")
            continue
        if path.suffix == ".json":
            manifest = json.loads(path.read_text())
            if "blob" in manifest:
                blob = _blob_of(job.cache, path, manifest["blob"])
                data = blob.read_bytes()
                assert len(data) == manifest["size"], blob
                assert hashlib.sha256(data).hexdigest() == manifest["blob"], blob
                seen["manifests"] += 1
    for path in sorted(job.reports.rglob("*")) if job.reports.exists() else ():
        if path.name.startswith("."):
            seen["temporary"] += path.name.endswith(".tmp")
            continue
        if path.suffix == ".json":
            RunRecord.from_dict(json.loads(path.read_text()))
        elif path.suffix == ".html":
            assert path.read_text().rstrip().endswith("</html>"), path
        elif path.suffix == ".md":
            assert path.read_text().strip(), path
        elif path.suffix == ".png":
            data = path.read_bytes()
            assert data.startswith(b"\x89PNG") and data.endswith(PNG_END), path
        else:
            continue
        seen["reports"] += 1
    latest = job.reports / "latest"
    if latest.exists() or latest.is_symlink():
        assert (latest / "report.json").is_file(), "latest names no whole report"
    if job.db.exists():
        import sqlite3

        with sqlite3.connect(job.db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
    return seen


def _blob_of(cache: Path, manifest: Path, digest: str) -> Path:
    """The blob a manifest names: ``blobs/<h[:2]>/<h>.*`` under the store root above it."""
    folder = manifest.parent
    while folder != cache.parent:
        found = list((folder / "blobs" / digest[:2]).glob(f"{digest}*"))
        if found:
            return found[0]
        folder = folder.parent
    raise AssertionError(f"{manifest}: its blob {digest[:12]} is missing")


# -- the zygote -------------------------------------------------------------------------------------
class Zygote:
    """This file as a script in another process, forking one child per run (see the top)."""

    def __init__(self, folder: Path):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("VITROBUST_FAULT", None)
        env.pop("VITROBUST_FAULT_LOG", None)
        self.errors = Path(folder) / "zygote.err"
        with open(self.errors, "w") as errors:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=errors, text=True)

    def run(self, job: dict) -> int:
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"the zygote died: {self.errors.read_text()[-3000:]}")
        return json.loads(reply)["code"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.proc.stdout.close()


def _serve() -> None:
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    import foolbox  # noqa: F401
    import matplotlib  # noqa: F401
    import pytest
    import timm  # noqa: F401

    import vitrobust.collect  # noqa: F401
    import vitrobust.engine  # noqa: F401
    import vitrobust.plugin  # noqa: F401
    import vitrobust.report  # noqa: F401
    import vitrobust.store  # noqa: F401
    from vitrobust import faults

    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(job, pytest, faults)
        print(json.dumps({"code": _wait(pid, job["timeout"])}), flush=True)


def _child(job: dict, pytest, faults) -> None:
    code = 99
    try:
        fd = os.open(job["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        faults.configure()
        code = int(pytest.main(job["args"]))
    except BaseException:   # noqa: BLE001 - the parent sees code 99 and the traceback in the output
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -1000   # timed out
        time.sleep(0.05)


if __name__ == "__main__":
    _serve()
