"""vitrobust diff: the same verdicts and non-timing numbers, or one line per difference."""
import copy
import json

from vitrobust.record import CheckRecord, MeasurementRecord, ModelRecord, RunRecord
from vitrobust.reportdiff import diff_runs, main


def _run():
    return RunRecord(
        run_id="a",
        models={"m": ModelRecord(name="m", weight_hash="h", size_mb=1.0, throughput=100.0)},
        measurements=[MeasurementRecord(key="asr(m, p)", kind="asr", spec="s", data="d", value=0.5, k=1, n=2,
                                        outcomes=[1, 0]),
                      MeasurementRecord(key="throughput(m)", kind="throughput", spec="s", data="d", value=100.0)],
        checks=[CheckRecord(spec="s", nodeid="n1", check="c", status="holds", outcome="passed")])


def test_identical_runs_have_no_difference_and_timings_do_not_count():
    a, b = _run(), _run()
    b.models["m"].throughput, b.measurements[1].value = 5.0, 5.0
    differences, counts = diff_runs(a, b)
    assert differences == [] and counts == {"checks": 1, "measurements": 1, "models": 1}


def test_a_flipped_verdict_an_image_and_a_weight_hash_are_reported():
    a, b = _run(), _run()
    b.checks[0].status = "fails"
    b.measurements[0].outcomes = [0, 0]
    b.models["m"].weight_hash = "other"
    text = "\n".join(diff_runs(a, b)[0])
    assert "n1: status 'holds' -> 'fails'" in text and "outcomes" in text and "weight_hash" in text


def test_float_noise_below_the_tolerance_is_the_same_number():
    a, b = _run(), _run()
    b.measurements[0].value = 0.5 + 1e-9
    assert diff_runs(a, b)[0] == []
    b.measurements[0].value = 0.51
    assert diff_runs(a, b)[0]


def test_missing_checks_are_named(tmp_path, capsys):
    a, b = _run(), copy.deepcopy(_run())
    b.checks = []
    (tmp_path / "a.json").write_text(json.dumps(a.to_dict()))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "report.json").write_text(json.dumps(b.to_dict()))
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b")]) == 1
    assert "check only in A: n1" in capsys.readouterr().out
    assert main([str(tmp_path / "a.json"), str(tmp_path / "a.json")]) == 0


def test_a_missing_or_broken_report_is_one_line_not_a_traceback(tmp_path, capsys):
    from vitrobust.reportdiff import main

    (tmp_path / "bad.json").write_text("{not json")
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err and "Traceback" not in err
    assert main([str(tmp_path / "bad.json"), str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vitrobust diff: not a report.json")
