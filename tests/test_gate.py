"""The release gate: planted regressions fail it, unchanged or noisy runs pass it."""
import dataclasses
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

from run_factory import clone, find, flip_outcomes, make_run, rate_measurement, refresh
from vitrobust import defaults, measures
from vitrobust.gate import HEADERS, comparability_notes, compare, gate_main, gated_kinds, table
from vitrobust.store import Store

ROOT = Path(__file__).resolve().parents[1]


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
    assert reg.delta == pytest.approx(meas.value - find(base, "asr(deit_tiny, pgd)").value)
    assert reg.delta > 0.1 and reg.p < 1e-6 and "McNemar b=25 c=0" in reg.reason
    assert "[" in reg.baseline and "n=" in reg.current
    assert f"+{reg.delta:.3f}" in table([reg])


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
    assert [r.key for r in compare(cur, base, margin=0.01)] == ["asr(deit_tiny, pgd)"]


def noisy(meas, up, down):
    """Flip ``up`` failures to successes and ``down`` successes to failures (disjoint images)."""
    zeros = [i for i, o in enumerate(meas.outcomes) if o == 0][:up]
    ones = [i for i, o in enumerate(meas.outcomes) if o == 1][:down]
    for i in zeros:
        meas.outcomes[i] = 1
    for i in ones:
        meas.outcomes[i] = 0
    return refresh(meas)


def test_rise_beyond_margin_that_noise_explains_passes_when_paired(base):
    cur = clone(base, "cur")
    meas = noisy(find(cur, "asr(deit_tiny, pgd)"), up=40, down=29)
    assert meas.value - find(base, "asr(deit_tiny, pgd)").value > 0.05
    assert compare(cur, base) == []   # McNemar: P(X >= 40 | 69) ~ 0.11
    # Different images (another data string): no pairing, the raw difference decides.
    meas.data = "digits/test[200:400]"
    [reg] = compare(cur, base)
    assert reg.p is None and "unpaired" in reg.reason and "[" in reg.baseline


def test_outcomes_of_another_length_are_not_paired(base):
    cur = clone(base, "cur")
    meas = noisy(find(cur, "asr(deit_tiny, pgd)"), up=40, down=29)
    meas.outcomes = meas.outcomes[:-1]
    refresh(meas)
    assert [r.reason for r in compare(cur, base)][0].startswith("rose by more than 0.05 (unpaired")


def test_check_that_held_and_now_fails(base):
    cur = clone(base, "cur")
    held = next(c for c in cur.checks if c.outcome == "passed")
    held.status, held.outcome = "fails", "failed"
    [reg] = compare(cur, base)
    assert reg.kind == "check" and reg.baseline == "holds/passed" and reg.current == "fails/failed"
    assert held.check in reg.key and "size=" in reg.key


def test_known_failure_or_inconclusive_is_not_a_regression(base):
    cur = clone(base, "cur")
    # The xfailed check failed in the baseline too; the skipped one never held.
    for check in cur.checks:
        if check.outcome in ("xfailed", "skipped"):
            check.status, check.outcome = "fails", "failed"
    assert compare(cur, base) == []


def test_clean_accuracy_drop(base):
    cur = clone(base, "cur")
    flip_outcomes(find(cur, "acc(deit_small)"), 20, to=0)
    cur.models["deit_tiny:int8"].clean_acc -= 0.08      # no acc measurement: table value
    cur.models["deit_small"].clean_acc -= 0.5           # covered by acc(deit_small) above
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
    cur.config = dataclasses.replace(base.config, max_images=40)
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
    assert gate_main(["--baseline", "release", "--db", str(db), "--margin", "0.5"]) == 0


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


# -- the measure registry decides what is gated ----------------------------------------------
def with_robust_acc(run, rng_seed=3):
    """``run`` plus a robust accuracy measurement (a registered rate, worse when it drops)."""
    meas = rate_measurement("robust_acc(deit_tiny, pgd)", "robust_acc", "pruning", "deit_tiny",
                            alias="pgd", rate=0.4, rng=np.random.default_rng(rng_seed))
    run.measurements.append(meas)
    return run


def test_robust_accuracy_drop_is_a_regression_with_no_edit_to_the_gate(base):
    assert measures.measure_kind("robust_acc").worse == "lower"
    base = with_robust_acc(base)
    cur = clone(base, "cur")
    assert compare(cur, base) == []
    flip_outcomes(find(cur, "robust_acc(deit_tiny, pgd)"), 30, to=0)
    [reg] = compare(cur, base)
    assert reg.kind == "robust_acc" and reg.delta < -0.1
    assert reg.reason.startswith("dropped by more than 0.05; paired McNemar b=30 c=0")
    # The other way is an improvement, not a regression.
    cur = clone(base, "up")
    flip_outcomes(find(cur, "robust_acc(deit_tiny, pgd)"), 30, to=1)
    assert compare(cur, base) == []


def test_which_way_is_worse_comes_from_the_registry(base, monkeypatch):
    """Declare asr 'lower is worse' and a falling ASR becomes the regression."""
    kind = measures.measure_kind("asr")
    monkeypatch.setitem(measures._MEASURES, "asr", dataclasses.replace(kind, worse="lower"))
    cur = clone(base, "cur")
    flip_outcomes(find(cur, "asr(deit_small, pgd)"), 40, to=0)
    assert [r.key for r in compare(cur, base)] == ["asr(deit_small, pgd)"]


def test_a_rate_without_a_worse_way_or_a_constant_is_not_gated(base, monkeypatch):
    kind = measures.measure_kind("transfer")
    monkeypatch.setitem(measures._MEASURES, "transfer", dataclasses.replace(kind, worse=None))
    cur = clone(base, "cur")
    flip_outcomes(find(cur, "transfer(deit_tiny -> deit_small, pgd)"), 30, to=1)
    find(cur, "size_mb(deit_tiny)").value *= 10       # a constant: never gated
    assert compare(cur, base) == []
    assert gated_kinds(cur) == {"asr", "acc"}


def test_unregistered_kinds_are_named_not_compared(base):
    cur = clone(base, "cur")
    find(cur, "asr(deit_tiny, pgd)").kind = "asr_v0"
    find(base, "asr(deit_tiny, pgd)").kind = "asr_v0"
    flip_outcomes(find(cur, "asr(deit_tiny, pgd)"), 30, to=1)
    assert compare(cur, base) == []
    assert comparability_notes(cur, base) == [
        "note: measurement kind(s) 'asr_v0' are not registered measures; the gate does not compare them"]


def test_gate_has_no_kind_list_and_its_defaults_are_the_projects():
    source = (ROOT / "vitrobust" / "gate.py").read_text()
    assert "RATE_KINDS" not in source and '("asr", "transfer")' not in source
    params = inspect.signature(compare).parameters
    assert params["margin"].default == defaults.MARGIN
    assert params["confidence"].default == defaults.CONFIDENCE


def test_recorded_interval_is_shown_not_recomputed(base):
    cur = clone(base, "cur")
    flip_outcomes(find(cur, "asr(deit_tiny, pgd)"), 25, to=1)
    find(base, "asr(deit_tiny, pgd)").interval = [0.111, 0.999]
    [reg] = compare(cur, base)
    assert "[0.11, 1.00]" in reg.baseline


def test_computed_interval_uses_the_measurements_confidence(base):
    cur = clone(base, "cur")
    meas = flip_outcomes(find(cur, "asr(deit_tiny, pgd)"), 25, to=1)
    wide = dataclasses.replace(meas, interval=None, confidence=0.999)
    narrow = dataclasses.replace(meas, interval=None, confidence=0.5)
    widths = []
    for m in (wide, narrow):
        cur.measurements[cur.measurements.index(find(cur, m.key))] = m
        [reg] = compare(cur, base)
        lo, hi = map(float, re.search(r"\[([\d.]+), ([\d.]+)\]", reg.current).groups())
        widths.append(hi - lo)
    assert widths[0] > widths[1] + 0.1


# -- one table for every caller ----------------------------------------------------------------
def test_table_has_the_headers_and_the_key(base):
    cur = clone(base, "cur")
    flip_outcomes(find(cur, "asr(deit_tiny, pgd)"), 25, to=1)
    lines = table(compare(cur, base)).splitlines()
    assert lines[0].split() == list(HEADERS)
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].startswith("pruning: asr(deit_tiny, pgd)")
    assert table([]).splitlines()[0].split() == list(HEADERS)


def test_table_keeps_the_sign_and_digits_of_delta(base):
    """tabulate would read '+0.130' as the number 0.13 and drop the sign."""
    cur = clone(base, "cur")
    flip_outcomes(find(cur, "acc(deit_small)"), 20, to=0)
    flip_outcomes(find(cur, "asr(deit_tiny, pgd)"), 25, to=1)
    text = table(compare(cur, base))
    assert re.search(r"\s-0\.\d{3}\s", text) and re.search(r"\s\+0\.\d{3}\s", text)


def test_every_caller_prints_regressions_with_gate_table():
    """run.py printed ``r.row()`` of a Regression that only had ``as_row()``: raw dataclasses and
    no headers. The gate has one way to print them, and no module formats them itself."""
    from vitrobust.gate import Regression

    assert not [n for n in dir(Regression) if "row" in n]
    offenders = [path.name for path in sorted((ROOT / "vitrobust").rglob("*.py"))
                 if re.search(r"\.(as_)?row\(", path.read_text())]
    assert offenders == []
