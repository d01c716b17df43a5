"""Kill and resume: a run SIGKILLed anywhere resumes to the same results and redoes nothing.

Each case kills a real run of a small job (:mod:`killrun`: two tiny models, three adversarial
sets, four checks) at one named point of the production code (:mod:`vitrobust.faults`), with
SIGKILL, so no ``finally`` or ``atexit`` runs. Then, on that state:

- nothing under a final name is partial: cache manifests and their blobs' checksums, report
  files, ``latest``, the database's integrity (:func:`killrun.final_names_whole`);
- the database holds the killed run as ``interrupted`` and never reads it as a result (or, if
  the kill came after its row was committed, as a complete run equal to the reference);
- the same command again (same cache, reports and database) ends as an uninterrupted run did:
  the same exit code, verdicts and non-timing numbers (:func:`vitrobust.reportdiff.diff_runs`);
- nothing finished before the kill is done again: models stored, adversarial sets stored and
  cache blobs written, counted from the fault log of both runs, add up to what one
  uninterrupted run does from the same start (one blob more when the kill fell between a
  blob and its manifest: that blob is written again, its entry was never committed).

Where the kill point comes after the models (or everything) are built, the job starts from a
copy of the reference run's cache for those parts, so each case pays only for what it tests.
A case whose point is never reached fails (the run is not killed).

A corrupt results database (garbage, a truncated file) ends a run with one line naming the file
and the command that moves it aside, the results saved as ``unfinished-*.json``; after that
command, the same run records normally.
"""
import json
import shutil
import subprocess

import pytest

from killrun import CHECKS, Job, Zygote, final_names_whole
from vitrobust.record import RunRecord
from vitrobust.reportdiff import diff_runs
from vitrobust.store import Store, UnknownRun

# id: (fault, start). The fault is a $VITROBUST_FAULT (vitrobust/faults.py); `start` is what of
# the reference's cache the job begins with: nothing, the trained models, or everything.
KILLS = {
    "mid-training":            ("kill@train-epoch:2", "empty"),
    "trained-not-stored":      ("kill@model-trained:1", "empty"),
    "model-blob-no-manifest":  ("kill@cache-blob-written:1 after model-trained", "empty"),
    "one-model-stored":        ("kill@model-committed:1", "empty"),
    "set-made-not-stored":     ("kill@adversarial-generated:1", "models"),
    "set-blob-no-manifest":    ("kill@cache-blob-written:1 after adversarial-generated", "models"),
    "one-set-stored":          ("kill@adversarial-committed:1", "models"),
    "between-checks":          ("kill@check-done:2", "models"),
    "run-row-begun":           ("kill@run-begun:1", "all"),
    "in-db-transaction":       ("kill@db-transaction:1", "all"),
    "row-committed-no-report": ("kill@run-recorded:1", "all"),
    "report-temp-file":        ("kill@atomic-write:1 after run-recorded", "all"),
    "between-report-files":    ("kill@report-file:3", "all"),
}


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run from an empty cache, in a plain ``python -m pytest`` process."""
    job = Job(tmp_path_factory.mktemp("reference"))
    run = job.run_fresh()
    assert run.code == 0, run.out[-3000:]
    record = _latest_report(job)
    assert [c.outcome for c in record.checks] == ["passed"] * CHECKS
    return job, run, record


def _latest_report(job: Job) -> RunRecord:
    return RunRecord.from_dict(json.loads((job.reports / "latest" / "report.json").read_text()))


def _job_from(reference_job: Job, folder, start: str) -> Job:
    job = Job(folder)
    parts = {"empty": [], "models": ["models"], "all": ["."]}[start]
    for part in parts:
        shutil.copytree(reference_job.cache / part, job.cache / part, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.lock"))
    return job


def _expected_work(ref, start: str) -> dict:
    """What one uninterrupted run does from ``start``: models and sets stored, blobs written."""
    models, sets, blobs = (ref.count(p) for p in ("model-committed", "adversarial-committed", "cache-blob-written"))
    return {"empty": {"models": models, "sets": sets, "blobs": blobs},
            "models": {"models": 0, "sets": sets, "blobs": blobs - models},
            "all": {"models": 0, "sets": 0, "blobs": 0}}[start]


@pytest.mark.parametrize("case", list(KILLS))
def test_a_killed_run_resumes_to_the_same_results_and_redoes_nothing(case, reference, zygote, tmp_path):
    ref_job, ref, ref_record = reference
    fault, start = KILLS[case]
    point = fault.split("@")[1].split(":")[0]
    job = _job_from(ref_job, tmp_path / "job", start)

    killed = job.run(zygote, fault)
    assert killed.code == -9, f"{fault} did not kill the run:\n{killed.out[-3000:]}"
    assert killed.log[-1] == point
    left = final_names_whole(job)
    if point == "atomic-write":   # the kill left a file under its temporary name: ignored below
        assert left["temporary"] >= 1
    committed = "run-recorded" in killed.log
    with Store(job.db, create=False) as store:
        [row] = store.list_runs(include_incomplete=True)
        assert row["status"] == ("complete" if committed else "interrupted"), row
        if committed:   # the row was whole before the kill: a result like any other
            assert diff_runs(ref_record, store.load_run(row["run_id"]))[0] == []
        else:
            assert store.latest_run() is None
            with pytest.raises(UnknownRun, match="interrupted"):
                store.load_run(row["run_id"])
    killed_id = row["run_id"]

    resumed = job.run(zygote)
    assert resumed.code == ref.code, resumed.out[-3000:]
    record = _latest_report(job)
    differences, counts = diff_runs(ref_record, record)
    assert differences == [] and counts["checks"] == CHECKS and counts["models"] == 3
    with Store(job.db, create=False) as store:
        assert store.latest_run().run_id == record.run_id
        assert diff_runs(record, store.load_run(record.run_id))[0] == []
        statuses = {r["run_id"]: r["status"] for r in store.list_runs(include_incomplete=True)}
    assert statuses == {killed_id: "complete" if committed else "interrupted", record.run_id: "complete"}
    final_names_whole(job)

    expected = _expected_work(ref, start)
    rewritten = 1 if point == "cache-blob-written" else 0
    done = {"models": "model-committed", "sets": "adversarial-committed", "blobs": "cache-blob-written"}
    assert {k: killed.count(p) + resumed.count(p) for k, p in done.items()} == \
        {**expected, "blobs": expected["blobs"] + rewritten}, (killed.log, resumed.log)
    assert record.cache["adversarial_generated"] == resumed.count("adversarial-committed")


def test_the_cases_cover_ten_kill_points_across_the_whole_run():
    points = {fault.split("@")[1].split(":")[0] for fault, _ in KILLS.values()}
    assert len(points) >= 10 and len(KILLS) >= 10
    assert {"train-epoch", "model-committed", "adversarial-committed", "check-done",
            "report-file", "db-transaction"} <= points


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_database_is_one_line_and_the_results_are_kept(damage, reference, zygote, tmp_path):
    ref_job, ref, ref_record = reference
    job = Job(tmp_path / "job", cache=ref_job.cache)   # everything cached: nothing is recomputed
    job.reports.mkdir()
    if damage == "garbage":
        job.db.write_bytes(b"\x00not a database\xff" * 512)
    else:
        data = ref_job.db.read_bytes()
        job.db.write_bytes(data[:len(data) // 2])

    run = job.run(zygote)
    assert run.code not in (0, -9) and "Traceback" not in run.out and "INTERNALERROR" not in run.out
    [line] = [line for line in run.out.splitlines() if "move it aside" in line]
    assert str(job.db) in line and "SQLite database" in line and "raw results saved to" in line
    [saved] = job.reports.glob("unfinished-*.json")
    assert str(saved) in line
    kept = RunRecord.from_dict(json.loads(saved.read_text()))
    assert diff_runs(ref_record, kept)[0] == []

    # the command in the message, as given, moves the file aside; the same run then records
    command = line.split("move it aside (", 1)[1].split(") and re-run", 1)[0]
    subprocess.run(command, shell=True, check=True, cwd=job.root)
    assert not job.db.exists() and job.db.with_name(job.db.name + ".bad").exists()
    assert command == f"mv {job.db} {job.db}.bad"
    again = job.run(zygote)
    assert again.code == ref.code, again.out[-3000:]
    with Store(job.db, create=False) as store:
        assert diff_runs(ref_record, store.latest_run())[0] == []


# -- the hook itself ---------------------------------------------------------------------------------
@pytest.fixture
def hook(monkeypatch):
    from vitrobust import faults

    kills = []
    monkeypatch.setattr(faults, "_die", lambda: kills.append(list(faults._seen.items())))
    yield faults, kills
    faults.configure()   # back to this process's environment (no fault)


def test_the_hook_kills_at_the_counted_arrival_and_logs_every_point(hook, tmp_path):
    faults, kills = hook
    log = tmp_path / "log"
    faults.configure({"VITROBUST_FAULT": "kill@b:2 after c", "VITROBUST_FAULT_LOG": str(log)})
    for name in ["b", "a", "c", "b", "a"]:
        faults.point(name)
    assert kills == []   # the b before c does not count
    faults.point("b")
    assert len(kills) == 1 and log.read_text().split() == ["b", "a", "c", "b", "a", "b"]
    faults.configure({"VITROBUST_FAULT": "kill@a"})
    faults.point("a")
    assert len(kills) == 2


def test_unset_the_hook_does_nothing_and_a_typo_is_one_line(hook):
    from vitrobust.errors import VitrobustError

    faults, kills = hook
    faults.configure({})
    for _ in range(3):
        faults.point("check-done")
    assert kills == [] and faults._seen == {}   # not even counted
    with pytest.raises(VitrobustError, match="expected kill@POINT"):
        faults.configure({"VITROBUST_FAULT": "kil@check-done"})
