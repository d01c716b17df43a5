"""pytest-xdist: ``pytest specs -n 2`` makes one run with the serial run's verdicts.

Unit tests for the parts (the merge of workers' results, the GPU of each worker, the timing
barrier, the defaults that group checks), and one end-to-end test that runs a spec on the
trained fixture models serially and on two workers and compares the two runs.
"""
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from spec_helpers import run_specs, spec_dir  # noqa: F401  (spec_dir is a fixture)
from vitrobust import cli, plugin_xdist
from vitrobust.expr import parse_check
from vitrobust.handoff import merge, pack, unpack, uses_of
from vitrobust.plugin_xdist import (asks_for_workers, check_group, default_to_loadgroup, gpu_for_worker,
                                    group_of_nodeid, make_scheduler, names_dist, pins_device, visible_gpus)
from vitrobust.record import CheckRecord, DataRecord, MeasurementRecord, ModelRecord, RunWarning
from vitrobust.reportdiff import diff_runs, load
from vitrobust.stats import wilson_interval

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]


# -- one GPU per worker ---------------------------------------------------------------------------
def test_worker_i_takes_gpu_i_mod_n_of_the_visible_ones():
    assert [gpu_for_worker(f"gw{i}", ["0", "1"]) for i in range(5)] == ["0", "1", "0", "1", "0"]
    assert gpu_for_worker("gw4", ["3", "5", "7"]) == "5"
    assert gpu_for_worker("gw1", ["GPU-aa", "GPU-bb"]) == "GPU-bb"   # UUIDs pass through
    assert gpu_for_worker("gw3", []) is None                         # no GPU: nothing to take
    assert gpu_for_worker("master", ["0", "1"]) is None


def test_visible_gpus_come_from_the_variable_else_the_count():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}, 8) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, 8) == []      # the user hid them all
    assert visible_gpus({}, 2) == ["0", "1"]
    assert visible_gpus({}, 0) == []


def test_a_pinned_device_is_left_alone():
    assert pins_device("cpu") and pins_device("cuda:1")
    assert not pins_device("auto") and not pins_device("cuda")


def test_a_worker_sets_its_gpu_unless_cuda_already_started(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    plugin_xdist._take_gpu("gw1", ["4", "5"])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)   # too late: it would not apply
    with pytest.warns(UserWarning, match="before it could be given GPU 5"):
        plugin_xdist._take_gpu("gw1", ["4", "5"])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5"


# -- grouping and the defaults that turn it on ---------------------------------------------------
@pytest.mark.parametrize("text, group", [
    ("asr(deit_tiny:int8, sp) > asr(deit_tiny, sp)", "deit_tiny:int8"),
    ("transfer(cnn_small -> deit_small, pgd) < asr(deit_small, pgd)", "cnn_small"),
    ("size_mb(deit_tiny:int8) < 0.35 * size_mb(deit_tiny)", "deit_tiny:int8"),
    ("acc(deit_small@s1) > 0.5", "deit_small@s1"),
])
def test_a_check_is_grouped_by_its_source_model(text, group):
    assert check_group(SimpleNamespace(node=parse_check(text))) == group


def test_the_scheduler_groups_spec_checks_by_source_model_and_leaves_other_tests_alone():
    pytest.importorskip("xdist")
    config = SimpleNamespace(getvalue={"tx": ["2*popen"]}.get)   # what xdist's scheduler reads
    nodeid = "specs/q.yaml::q[size=tiny]::transfer(deit_tiny -> deit_tiny:int8, sp) > asr(deit_tiny:int8, sp)"
    assert group_of_nodeid(nodeid) == "deit_tiny"
    assert group_of_nodeid("tests/test_a.py::test_b") is None
    assert group_of_nodeid("specs/q.yaml::q::not a check (") is None
    scheduler = make_scheduler(config, None)
    assert scheduler._split_scope(nodeid) == "deit_tiny"
    assert scheduler._split_scope("specs/q.yaml::q::size_mb(deit_base) < 1") == "deit_base"
    assert scheduler._split_scope("tests/test_a.py::test_b") == "tests/test_a.py::test_b"


def test_n_without_dist_defaults_to_loadgroup():
    option = SimpleNamespace(numprocesses=2, dist="no", distload=False)
    assert default_to_loadgroup(option) and option.dist == "loadgroup"
    for given in ({"numprocesses": 2, "dist": "load"}, {"numprocesses": 2, "dist": "no", "distload": True},
                  {"numprocesses": None, "dist": "no"}, {"numprocesses": 0, "dist": "no"}):
        option = SimpleNamespace(**{"distload": False, **given})
        assert not default_to_loadgroup(option) and option.dist == given["dist"]


def test_command_lines_that_ask_for_workers_or_a_dist_mode():
    assert all(asks_for_workers(a) for a in (["-n", "2"], ["-nauto"], ["-n2"], ["--numprocesses=4"]))
    assert not any(asks_for_workers(a) for a in (["-k", "n"], ["--no-header"], ["specs"]))
    assert all(names_dist(a) for a in (["--dist", "load"], ["--dist=each"], ["-d"]))
    assert not names_dist(["-n", "2"])


def test_vitrobust_run_passes_dist_loadgroup_with_n(monkeypatch, tmp_path):
    import pytest as pytest_module

    (tmp_path / "specs").mkdir()
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setenv("VITROBUST_JOBS", "1")   # no pool: pytest.main is the only call
    monkeypatch.setattr(pytest_module, "main", lambda args: calls.append(list(args)) or 0)
    assert cli.main(["run", "-n", "2", "-k", "tiny"]) == 0
    assert calls[-1][-2:] == ["--dist", "loadgroup"]
    cli.main(["run", "-n", "2", "--dist", "load"])            # the user's choice stands
    assert calls[-1].count("--dist") == 1 and "loadgroup" not in calls[-1]
    cli.main(["run", "-k", "tiny"])                           # no workers: nothing added
    assert "--dist" not in calls[-1]


# -- what workers hand over, and the merge ---------------------------------------------------------
class FakeEngine:
    """The tables an engine fills as checks run, filled by hand."""

    data_source, max_images, device, precision, batch_size, seeds = "digits", 60, "cpu", "fp32", 256, 1

    def __init__(self, generated=0):
        self.measurements, self.model_records, self.data_records = {}, {}, {}
        self.warnings, self.clean, self.closing = [], [], []
        self.generated = generated

    def clean_accuracies(self):
        return list(self.clean)

    def data_slice(self, spec_data):
        return SimpleNamespace(key=f"digits/test[:{(spec_data or {}).get('limit', 60)}]")

    def model(self, name, hash_="h", throughput=None, clean_acc=None):
        self.model_records[name] = ModelRecord(name, weight_hash=hash_, params=10, throughput=throughput,
                                               throughput_batch=64, clean_acc=clean_acc)

    def measure(self, key, data, spec, k=30, n=40, confidence=0.95):
        self.measurements[(key, data, ())] = MeasurementRecord(
            key, "asr", k / n, spec=spec, target="m", data=data, k=k, n=n, confidence=confidence,
            interval=[0.0, 1.0], outcomes=[1] * k + [0] * (n - k))

    def record_parts(self):
        self.warnings += self.closing   # what record_parts files at the end (in-effect, ...)
        return {"models": dict(self.model_records), "measurements": list(self.measurements.values()),
                "artifacts": {}, "warnings": list(self.warnings), "data": dict(self.data_records),
                "profile": [{"kind": "model", "name": "m", "seconds": 1.0, "total": 1.0, "count": 1}],
                "cache": {"adversarial_generated": self.generated, "adversarial_reused": 1}}


def check(nodeid, spec, status="holds", confidence=0.95):
    return CheckRecord(spec=spec, nodeid=nodeid, check=nodeid, status=status, outcome="passed",
                       confidence=confidence)


def use(data, measurements=(), models=(), clean=()):
    return {"data": data, "measurements": list(measurements), "models": list(models), "clean": list(clean)}


A, B = "digits/test[:60]", "digits/test[:40]"


def two_workers():
    """Four checks in collection order 0..3; gw0 runs 2 then 0, gw1 runs 3 then 1 (a worker
    runs its groups in the order they are sent, not in collection order)."""
    a, b = FakeEngine(generated=2), FakeEngine(generated=1)
    # gw0, check 2 (spec s2) makes size_mb(z) and asr(m, pgd) on A; check 0 (spec s0,
    # confidence 0.9) reads the latter
    a.measure("size_mb(z)", A, "s2")
    a.measure("asr(m, pgd)", A, "s2")
    a.model("z")
    a.model("m", throughput=900.0)
    a.clean.append(("m", A, 0.5))
    a.data_records[A] = DataRecord(A, images=60)
    a.warnings.append(RunWarning("nondeterministic", "m differs", "m"))
    # gw1, check 3 (spec s3) scores m on A, then check 1 (spec s1) scores m on B and times nothing
    b.measure("asr(m, pgd)", A, "s3")
    b.model("m")
    b.clean.append(("m", A, 0.5))
    b.data_records[A] = DataRecord(A, images=60)
    b.measure("asr(m, pgd)", B, "s1", k=20)
    b.clean.append(("m", B, 0.75))
    b.data_records[B] = DataRecord(B, images=40)
    b.model("n", hash_="other")
    b.warnings.append(RunWarning("nondeterministic", "m differs", "m"))
    b.closing.append(RunWarning("compression-not-in-effect", "n keeps every token", "n"))
    uses_a = [(2, use(A, ["size_mb(z)", "asr(m, pgd)"], ["z", "m"], ["m"])), (0, use(A, ["asr(m, pgd)"], ["m"], ["m"]))]
    uses_b = [(3, use(A, ["asr(m, pgd)"], ["m"], ["m"])), (1, use(B, ["asr(m, pgd)"], ["m", "n"], ["m"]))]
    outputs = [pack("gw1", [(3, "x.yaml::d", check("x.yaml::d", "s3")), (1, "x.yaml::b", check("x.yaml::b", "s1"))],
                    b, uses_b),
               pack("gw0", [(2, "x.yaml::c", check("x.yaml::c", "s2", "fails")),
                            (0, "x.yaml::a", check("x.yaml::a", "s0", confidence=0.9))], a, uses_a)]
    return [unpack(text) for text in outputs]


def test_merged_checks_are_in_collection_order_and_keep_their_verdicts():
    merged = merge(two_workers())
    assert [c.nodeid for c in merged.checks] == ["x.yaml::a", "x.yaml::b", "x.yaml::c", "x.yaml::d"]
    assert [c.status for c in merged.checks] == ["holds", "holds", "fails", "holds"]


def test_merged_entries_are_kept_once_in_the_order_the_serial_run_made_them():
    parts = merge(two_workers()).record_parts()
    assert [(m.key, m.data) for m in parts["measurements"]] == [("asr(m, pgd)", A), ("asr(m, pgd)", B),
                                                                  ("size_mb(z)", A)]
    assert list(parts["models"]) == ["m", "n", "z"] and list(parts["data"]) == [A, B]
    assert [w.kind for w in parts["warnings"]] == ["nondeterministic", "compression-not-in-effect"]
    assert parts["cache"] == {"adversarial_generated": 3, "adversarial_reused": 2}
    assert parts["profile"] == [{"kind": "model", "name": "m", "seconds": 2.0, "total": 2.0, "count": 2}]


def test_a_measurement_belongs_to_the_first_check_in_collection_order_that_reads_it():
    on_a, on_b, _ = merge(two_workers()).record_parts()["measurements"]
    # made by check 2 on gw0 and check 3 on gw1; serially check 0 would have made it
    assert on_a.spec == "s0"
    assert on_a.confidence == 0.9 and on_a.interval == pytest.approx(list(wilson_interval(30, 40, 0.9)))
    assert on_b.spec == "s1" and on_b.confidence == 0.95 and on_b.interval == [0.0, 1.0]


def test_a_models_clean_accuracy_is_from_the_slice_a_serial_run_scored_last():
    # serially: A at check 0, B at check 1, so B is m's last slice, though gw1 scored A after it
    assert merge(two_workers()).record_parts()["models"]["m"].clean_acc == 0.75


def test_a_throughput_timed_on_any_worker_is_kept_else_left_for_the_serial_step():
    models = merge(two_workers()).record_parts()["models"]
    assert models["m"].throughput == 900.0     # gw1's copy of m is untimed; gw0 timed it
    assert models["n"].throughput is None and models["z"].throughput is None


def test_workers_that_built_different_weights_under_one_name_are_flagged():
    results = two_workers()
    assert not [w for w in merge(results).parts["warnings"] if w.kind == "workers-disagree"]
    results[0].parts["models"]["m"].weight_hash = "different"
    [warning] = [w for w in merge(results).parts["warnings"] if w.kind == "workers-disagree"]
    assert warning.model == "m"


def test_no_engine_on_any_worker_is_no_run():
    assert merge([unpack(pack("gw0", [(0, "x::a", check("x::a", "s"))]))]) is None


def test_the_uses_of_a_check_are_what_it_reads_in_order():
    engine = FakeEngine()
    node = parse_check("transfer(cnn -> vit, pgd) < asr(vit, pgd) + size_mb(big)")
    got = uses_of(SimpleNamespace(node=node), {"limit": 60}, engine)
    assert got == {"data": A, "measurements": ["transfer(cnn -> vit, pgd)", "asr(vit, pgd)", "size_mb(big)"],
                   "models": ["vit", "cnn", "big"], "clean": ["vit"]}
    engine.seeds = 2   # every replica's, replica by replica
    assert uses_of(SimpleNamespace(node=parse_check("acc(vit) > 0.5")), None, engine)["measurements"] == \
        ["acc(vit)", "acc(vit@s1)"]


def test_numpy_numbers_survive_the_handoff():
    np = pytest.importorskip("numpy")
    record = check("x::a", "s")
    record.values, record.p_value = {"acc(m)": np.float32(0.5)}, np.float64(0.01)
    record.params = {"size": np.int64(3)}
    [(_, _, back)] = unpack(pack("gw0", [(0, "x::a", record)])).checks
    assert back.values == {"acc(m)": 0.5} and back.p_value == 0.01 and back.params == {"size": 3}


# -- the timing barrier --------------------------------------------------------------------------
BARRIER_CHILD = """
import sys, time
from pathlib import Path
from vitrobust.barrier import Barrier
folder, role = Path(sys.argv[1]), sys.argv[2]
barrier = Barrier(folder / "locks")
def stamp(name):
    (folder / name).write_text(repr(time.time()))
def wait(name):
    while not (folder / name).exists():
        time.sleep(0.01)
if role == "check":            # a check that computes, already running
    with barrier.held():
        stamp("check-in"); time.sleep(1.0); stamp("check-out")
elif role == "timer":          # a check that times: must wait for the running one
    wait("check-in")
    with barrier.held(exclusive=True):
        stamp("timer-in"); time.sleep(0.5); stamp("timer-out")
else:                          # a check that starts while the timer waits: must not overtake it
    wait("check-in"); time.sleep(0.4)
    with barrier.held():
        stamp("late-in")
"""


def test_a_timing_check_runs_alone_and_is_not_overtaken(tmp_path):
    from vitrobust.barrier import LOCKS

    if not LOCKS:
        pytest.skip("no fcntl here: the barrier lets everything through")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", BARRIER_CHILD, str(tmp_path), role], env=env)
             for role in ("check", "timer", "late")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    t = {name: float((tmp_path / name).read_text()) for name in ("check-out", "timer-in", "timer-out", "late-in")}
    assert t["timer-in"] >= t["check-out"]    # the timing waited for the running check
    assert t["late-in"] >= t["timer-out"]     # a check started meanwhile waited for the timing


# -- end to end: serial and two workers ------------------------------------------------------------
SPEC = """
id: par
about: one run from two workers
data: {split: test, limit: 160}
attacks:
  fgsm: {name: fgsm, eps: 2/255}
  pgd: {name: pgd, eps: 4/255, steps: 5}
matrix: {model: [vit_fixture, vit_fixture_wide]}
checks:
  - asr({model}, pgd) > asr({model}, fgsm)
  - transfer(cnn_fixture -> {model}, pgd) < asr({model}, pgd)
  - acc({model}) > 0.5
  - size_mb(vit_fixture) < size_mb(vit_fixture_wide)
  - throughput(vit_fixture) > 0.1 * throughput(vit_fixture_wide)
"""
CHECKS = 8
GROUPS = {   # source model -> its checks
    "vit_fixture": ["asr(vit_fixture, pgd) > asr(vit_fixture, fgsm)", "acc(vit_fixture) > 0.5",
                    "size_mb(vit_fixture) < size_mb(vit_fixture_wide)",
                    "throughput(vit_fixture) > 0.1 * throughput(vit_fixture_wide)"],
    "vit_fixture_wide": ["asr(vit_fixture_wide, pgd) > asr(vit_fixture_wide, fgsm)", "acc(vit_fixture_wide) > 0.5"],
    "cnn_fixture": ["transfer(cnn_fixture -> vit_fixture, pgd) < asr(vit_fixture, pgd)",
                    "transfer(cnn_fixture -> vit_fixture_wide, pgd) < asr(vit_fixture_wide, pgd)"],
}
FAST = ("-p", "no:cacheprovider", "--vitrobust-no-progress", "--vitrobust-max-images=60")


def _on_two_workers(pytester, *args):
    """``pytest specs -n 2`` in a child process (xdist's workers need a real command line); no
    ``--dist``: the plugin must choose loadgroup itself."""
    return pytester.runpytest_subprocess("specs", "-n", "2", "-v", *FAST,
                                         f"--vitrobust-report-dir={pytester.path / 'reports'}", *args,
                                         timeout=600)


def _runs(db: Path) -> dict:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT r.run_id, (SELECT COUNT(*) FROM checks c WHERE c.run_id = r.run_id) "
                                 "FROM runs r ORDER BY r.run_id").fetchall())


def test_two_workers_make_one_run_with_the_serial_verdicts(pytester, spec_dir):
    pytest.importorskip("xdist")
    # the workers import this conftest; it registers the fixture models there too
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport fixtures.models  # noqa\n")
    (spec_dir / "par.yaml").write_text(SPEC)
    reports, db = pytester.path / "reports", pytester.path / "reports" / "vitrobust.sqlite"

    serial = run_specs(pytester, *FAST)
    serial.assert_outcomes(passed=CHECKS)
    [serial_folder] = [p for p in reports.iterdir() if p.is_dir() and p.name != "latest"]

    parallel = _on_two_workers(pytester, "--vitrobust-save-baseline=par")
    out = parallel.stdout.str()
    assert parallel.ret == 0, out
    parallel.assert_outcomes(passed=CHECKS)
    # the controller printed the summary of the whole run
    assert re.search(r"=+ vitrobust =+", out) and "saved run" in out and "report:" in out
    # exactly one more run in the database, holding every check; workers wrote no folder of their own
    runs = _runs(db)
    assert len(runs) == 2 and set(runs.values()) == {CHECKS}
    folders = [p for p in reports.iterdir() if p.is_dir() and p.name != "latest" and p != serial_folder]
    assert len(folders) == 1
    with sqlite3.connect(db) as conn:
        (baseline,) = conn.execute("SELECT run_id FROM baselines WHERE name = 'par'").fetchone()
    assert runs[baseline] == CHECKS and baseline == folders[0].name

    # same verdicts and non-timing numbers as the serial run, in the same order
    one, two = load(serial_folder), load(folders[0])
    assert diff_runs(one, two) == ([], {"checks": CHECKS, "measurements": 10, "models": 3})
    assert [c.nodeid for c in two.checks] == [c.nodeid for c in one.checks]
    assert [m.key for m in two.measurements] == [m.key for m in one.measurements]
    # every speed was timed: the checks' on a worker running alone, the rest after the workers
    assert all(m.throughput for m in two.models.values())
    assert [w.kind for w in two.warnings] == [*[w.kind for w in one.warnings], "parallel-run"]

    # one source model's checks ran on one worker
    assert "scheduling tests via CheckGroupScheduling" in out
    ran = dict((check, worker) for worker, check in re.findall(r"^\[(gw\d)\] .*PASSED specs/par\.yaml::\S+::(.+?)\s*$",
                                                                out, flags=re.M))
    assert len(ran) == CHECKS, out
    for group in GROUPS.values():
        assert len({ran[c] for c in group}) == 1, (group, ran)

    # a regression against a baseline fails the session: plant one (PGD fooled nothing before)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT rowid, outcomes FROM measurements WHERE run_id = ? AND key = ?",
                            (baseline, "asr(vit_fixture_wide, pgd)")).fetchall()
        assert rows
        for rowid, outcomes in rows:
            zeroed = json.dumps([None if o is None else 0 for o in json.loads(outcomes)])
            conn.execute("UPDATE measurements SET value = 0, k = 0, outcomes = ? WHERE rowid = ?", (zeroed, rowid))
    gated = _on_two_workers(pytester, "-k", "vit_fixture_wide and pgd and not transfer",
                            "--vitrobust-baseline=par")
    gated.assert_outcomes(passed=1)   # every check passed: the exit status is the gate's
    assert gated.ret == 1
    assert "REGRESSIONS against baseline 'par'" in gated.stdout.str()


def test_without_xdist_the_plugin_runs_serially_as_before(pytester, spec_dir):
    (spec_dir / "par.yaml").write_text(SPEC)
    result = run_specs(pytester, "-p", "no:xdist", "-k", "size_mb", *FAST)
    result.assert_outcomes(passed=1)
    assert _runs(pytester.path / "reports" / "vitrobust.sqlite") and "report:" in result.stdout.str()
