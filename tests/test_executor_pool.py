"""The local process pool (vitrobust/executor_pool.py): when it is used, that its workers make
the sets a serial run makes byte for byte, that the session then decides from the cache alone,
and that a worker killed mid-run loses nothing the session cannot make itself."""
import json

import pytest
import torch

from fill_helpers import from_cache, serial, sharded, spec_args  # noqa: F401  (fixtures)
from spec_helpers import fresh_cache  # noqa: F401  (a fixture)

from vitrobust import cli, executor_pool
from vitrobust.executor_pool import MIN_SECONDS, PoolBackend, jobs_for
from vitrobust.fill import depth_waves, fill_cache
from vitrobust.planner import Unit


def _totals(todo: int, cost: float) -> dict:
    kinds = {k: {"todo": 0} for k in ("model", "clean", "adversarial")}
    kinds["adversarial"]["todo"] = todo
    return {**kinds, "cost": cost}


@pytest.mark.parametrize("cores, todo, cost, expected", [
    (2, 10, MIN_SECONDS, 2),          # a minute of work on two cores: a pool
    (2, 10, MIN_SECONDS - 1, 1),      # less: its start would cost more than it saves
    (1, 10, 10 * MIN_SECONDS, 1),     # one core: nothing to share
    (4, 1, 10 * MIN_SECONDS, 1),      # one unit: nothing to spread
    (8, 3, 10 * MIN_SECONDS, 8),
])
def test_auto_uses_a_pool_only_when_it_pays(monkeypatch, cores, todo, cost, expected):
    monkeypatch.setattr(executor_pool, "usable_cores", lambda: cores)
    assert jobs_for("auto", _totals(todo, cost)) == expected


def test_a_number_of_jobs_is_taken_as_given_unless_there_is_at_most_one_unit():
    assert jobs_for("3", _totals(2, 0.0)) == 3
    assert jobs_for("3", _totals(1, 1e6)) == 1
    assert jobs_for("1", _totals(50, 1e6)) == 1


def test_workers_share_the_cores(monkeypatch):
    monkeypatch.setattr(executor_pool, "usable_cores", lambda: 8)
    assert PoolBackend(2).threads == 4 and PoolBackend(3).threads == 2 and PoolBackend(16).threads == 1


def test_model_builds_come_in_waves_a_variant_after_its_base():
    units = [Unit("model", "a"), Unit("model", "a:int8", needs=["a"]), Unit("model", "b"),
             Unit("model", "a:prune0.5", needs=["a"]), Unit("model", "a:prune0.5:int8", needs=["a:prune0.5"])]
    assert [[u.model for u in wave] for wave in depth_waves(units)] == \
        [["a", "b"], ["a:int8", "a:prune0.5"], ["a:prune0.5:int8"]]


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_a_bad_jobs_value_is_one_line(bad, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["run", "--jobs", bad])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "is not 'auto' or a number of processes" in err[-1]


def test_a_pool_run_makes_the_serial_sets_and_the_session_decides_from_the_cache(
        tmp_path, spec_args, serial, fresh_cache, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["run", spec_args[0], "--jobs", "2", "--vitrobust-no-progress", "-p", "no:randomly",
                     f"--vitrobust-report-dir={tmp_path / 'reports'}"])
    assert code == 0
    out = capsys.readouterr().out
    assert "pool: 0 model, 6 clean and 6 adversarial units run, 2 already cached" in out   # 2 models
    made = from_cache(fresh_cache, serial)
    assert all(torch.equal(made[k], serial[k]) for k in serial)
    run = json.loads((tmp_path / "reports" / "latest" / "report.json").read_text())
    # every prediction was made in a worker, where the images were: the session loaded none
    assert run["cache"] == {"adversarial_generated": 0, "adversarial_reused": 0,
                            "predictions_generated": 0, "predictions_reused": 2 * 3 + 3 * 3,
                            "speeds_timed": 2, "speeds_reused": 0}   # the models table's, in the session
    assert [c["status"] for c in run["checks"]] == ["holds", "holds"]
    # the workers' time is in the run's profile: each set's three shards under the set's name
    made_in_workers = {i["name"]: i["count"] for i in run["profile"] if i["kind"] == "adversarial"}
    assert made_in_workers == {"vit_fixture fgsm": 3, "vit_fixture pgd": 3}


def test_a_killed_worker_breaks_the_pool_and_the_session_makes_what_is_missing(
        tmp_path, spec_args, serial, fresh_cache, monkeypatch):
    # each worker SIGKILLs itself once its second set is committed (read at its import; this
    # process imported vitrobust.faults long ago and is not affected)
    monkeypatch.setenv("VITROBUST_FAULT", "kill@adversarial-committed:2")
    monkeypatch.setenv("VITROBUST_FAULT_LOG", str(tmp_path / "points"))
    summary = fill_cache(spec_args, PoolBackend(2, progress=False), echo=lambda line: None)
    assert summary.failed, "a killed worker must show as failed units"
    assert all("BrokenProcessPool" in error or "terminated abruptly" in error for _, error in summary.failed)
    committed = (tmp_path / "points").read_text().split().count("adversarial-committed")
    assert 2 <= committed < len(serial)   # the sets committed before the kills stay in the cache
    monkeypatch.delenv("VITROBUST_FAULT")
    monkeypatch.chdir(tmp_path)
    code = cli.main(["run", spec_args[0], "--jobs", "1", "--vitrobust-no-progress", "-p", "no:randomly",
                     f"--vitrobust-report-dir={tmp_path / 'reports'}"])
    assert code == 0
    run = json.loads((tmp_path / "reports" / "latest" / "report.json").read_text())
    assert run["cache"]["adversarial_generated"] == len(serial) - committed
    assert [c["status"] for c in run["checks"]] == ["holds", "holds"]
    made = from_cache(fresh_cache, serial)
    assert all(torch.equal(made[k], serial[k]) for k in serial)


@pytest.mark.parametrize("jobs, numprocesses, collectonly, worker, expected", [
    ("auto", None, False, False, True),
    ("2", None, False, False, True),
    ("1", None, False, False, False),      # no pool asked for
    ("auto", 2, False, False, False),      # xdist spreads the checks instead
    ("auto", None, False, True, False),    # an xdist worker
    ("auto", None, True, False, False),    # collection only (vitrobust plan, Ray's planning)
])
def test_the_session_starts_a_pool_only_where_it_belongs(jobs, numprocesses, collectonly, worker, expected):
    from types import SimpleNamespace

    from vitrobust.plugin_pool import wanted

    options = {"vitrobust_jobs": jobs, "collectonly": collectonly}
    config = SimpleNamespace(getoption=options.get, option=SimpleNamespace(numprocesses=numprocesses))
    if worker:
        config.workerinput = {}
    assert wanted(config) is expected
