"""The release gate: planted regressions fail it, unchanged or noisy runs pass it."""
import pytest

from run_factory import clone, find, flip_outcomes, make_run, refresh
from vitrobust.gate import HEADERS, comparability_notes, compare, gate_main, table
from vitrobust.store import Store


@pytest.fixture
def base():
    return make_run("base")


def only(regs, kind):
    return [r for r in regs if r.kind == kind]


def test_identical_runs_have_no_regression(base):
    assert compare(clone(base, "cur"), base) == []


def test_planted_paired_asr_rise_is_a_regression(base):
    cur = clone(base, "cur")
    meas = flip_outcomes(find(cur, "asr(deit_tiny, pgd)"), 25, to=1)
    [reg] = compare(cur, base)
    assert reg.key == "asr(deit_tiny, pgd)" and reg.spec == "pruning" and reg.kind == "asr"
    assert reg.delta == pytest.approx(meas["value"] - find(base, "asr(deit_tiny, pgd)")["value"])
    assert reg.delta > 0.1 and reg.p < 1e-6 and "McNemar b=25 c=0" in reg.reason
    row = dict(zip(HEADERS, reg.as_row()))
    assert "[" in row["baseline"] and "n=" in row["current"] and row["delta"].startswith("+")


def test_transfer_rise_is_a_regression(base):
    cur = clone(base, "cur")
    flip_outcomes(find(cur, "transfer(deit_tiny -> deit_small, pgd)"), 30, to=1)
    assert [r.kind for r in compare(cur, base)] == ["transfer"]


def test_rise_within_margin_or_a_fall_is_not(base):
    cur = clone(base, "cur")
    flip_outcomes(find(cur, "asr(deit_tiny, pgd)"), 5, to=1)          # +~0.026 < 0.05
    flip_outcomes(find(cur, "asr(deit_small, pgd)"), 40, to=0)        # ASR fell: fine
    assert compare(cur, base) == []
    # A tighter margin catches the small rise: 5 vs 0 discordant images give p = 1/32 < 0.05.
    assert [r.key for r in compare(cur, base, asr_margin=0.01)] == ["asr(deit_tiny, pgd)"]


def noisy(meas, up, down):
    """Flip ``up`` failures to successes and ``down`` successes to failures (disjoint images)."""
    zeros = [i for i, o in enumerate(meas["outcomes"]) if o == 0][:up]
    ones = [i for i, o in enumerate(meas["outcomes"]) if o == 1][:down]
    for i in zeros:
        meas["outcomes"][i] = 1
    for i in ones:
        meas["outcomes"][i] = 0
    return refresh(meas)


def test_rise_beyond_margin_that_noise_explains_passes_when_paired(base):
    cur = clone(base, "cur")
    meas = noisy(find(cur, "asr(deit_tiny, pgd)"), up=40, down=29)
    assert meas["value"] - find(base, "asr(deit_tiny, pgd)")["value"] > 0.05
    assert compare(cur, base) == []   # McNemar: P(X >= 40 | 69) ~ 0.11
    # Different images (another data string): no pairing, the raw difference decides.
    meas["data"] = "digits/test[200:400]"
    [reg] = compare(cur, base)
    assert reg.p is None and "unpaired" in reg.reason and "[" in reg.baseline


def test_outcomes_of_another_length_are_not_paired(base):
    cur = clone(base, "cur")
    meas = noisy(find(cur, "asr(deit_tiny, pgd)"), up=40, down=29)
    meas["outcomes"] = meas["outcomes"][:-1]
    refresh(meas)
    assert [r.reason for r in compare(cur, base)][0].startswith("rose by more than 0.05 (unpaired")


def test_check_that_held_and_now_fails(base):
    cur = clone(base, "cur")
    held = next(c for c in cur["checks"] if c["outcome"] == "passed")
    held.update(status="fails", outcome="failed")
    [reg] = compare(cur, base)
    assert reg.kind == "check" and reg.baseline == "holds/passed" and reg.current == "fails/failed"
    assert held["check"] in reg.key and "size=" in reg.key


def test_known_failure_or_inconclusive_is_not_a_regression(base):
    cur = clone(base, "cur")
    # The xfailed check failed in the baseline too; the skipped one never held.
    for check in cur["checks"]:
        if check["outcome"] in ("xfailed", "skipped"):
            check.update(status="fails", outcome="failed")
    assert compare(cur, base) == []


def test_clean_accuracy_drop(base):
    cur = clone(base, "cur")
    flip_outcomes(find(cur, "acc(deit_small)"), 20, to=0)
    cur["models"]["deit_tiny:int8"]["clean_acc"] -= 0.08      # no acc measurement: table value
    cur["models"]["deit_small"]["clean_acc"] -= 0.5           # covered by acc(deit_small) above
    regs = compare(cur, base)
    assert sorted(r.key for r in regs) == ["acc(deit_small)", "clean_acc(deit_tiny:int8)"]
    assert all(r.delta < 0 for r in regs)


@pytest.fixture
def db(tmp_path, base):
    path = tmp_path / "gate.sqlite"
    with Store(path) as store:
        store.record(base)
        store.save_baseline("release", "base")
    return path


def test_gate_main_passes_an_unchanged_run(db, base, capsys):
    with Store(db) as store:
        store.record(clone(base, "cur"))
    assert gate_main(["--baseline", "release", "--db", str(db)]) == 0
    assert "no regressions" in capsys.readouterr().out


def test_a_capped_run_is_flagged_as_not_like_for_like(db, base, capsys):
    cur = clone(base, "cur")
    cur["config"] = {**(base.get("config") or {}), "max_images": 40}
    [note] = comparability_notes(cur, base)
    assert "max_images differs from the baseline (None there, 40 here)" in note
    assert comparability_notes(clone(base, "same"), base) == []
    with Store(db) as store:
        store.record(cur)
    gate_main(["--baseline", "release", "--db", str(db)])
    assert "note: max_images differs" in capsys.readouterr().out


def test_gate_main_fails_a_planted_regression(db, base, capsys):
    cur = clone(base, "cur")
    flip_outcomes(find(cur, "asr(deit_tiny:int8, sp)"), 30, to=1)
    with Store(db) as store:
        store.record(cur)
    assert gate_main(["--baseline", "release", "--run", "cur", "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert "asr(deit_tiny:int8, sp)" in out and "1 regression(s)" in out
    # A wide enough margin lets it through.
    assert gate_main(["--baseline", "release", "--db", str(db), "--asr-margin", "0.5"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--baseline", "nope"], "unknown baseline 'nope'"),
    (["--baseline", "release", "--run", "ghost"], "run 'ghost' is not recorded"),
])
def test_gate_main_unknown_names_exit_2(db, capsys, args, message):
    assert gate_main(args + ["--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_gate_main_missing_database_exits_2(tmp_path, capsys):
    assert gate_main(["--baseline", "x", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "no results database" in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite").exists()


def test_gate_main_usage_error_exits_2(capsys):
    assert gate_main([]) == 2


def test_table_renders_rows(base):
    cur = clone(base, "cur")
    flip_outcomes(find(cur, "asr(deit_tiny, pgd)"), 25, to=1)
    text = table(compare(cur, base))
    assert "pruning: asr(deit_tiny, pgd)" in text and "reason" in text
