"""The typed run record: to_dict / from_dict round trips, and old records still load."""
import json

from vitrobust.record import (SCHEMA_VERSION, CheckRecord, MeasurementRecord, ModelRecord, RunConfig,
                              RunRecord, RunWarning, new_run_id)


def _run():
    return RunRecord(
        run_id=new_run_id(), started="2026-01-01T00:00:00", finished="2026-01-01T00:01:00",
        config=RunConfig(data="digits", max_images=40),
        models={"m": ModelRecord(name="m", weight_hash="abc", params=10, size_mb=0.1, clean_acc=0.9)},
        measurements=[MeasurementRecord(key="asr(m, pgd)", kind="asr", value=0.5, spec="s", target="m",
                                        alias="pgd", attack="pgd", k=1, n=2, interval=[0.1, 0.9],
                                        confidence=0.95, outcomes=[1, 0, None])],
        checks=[CheckRecord(spec="s", nodeid="s.yaml::s::c", check="asr(m, pgd) > 0.1", status="holds",
                            outcome="passed")],
        warnings=[RunWarning("nondeterministic", "m: differs", "m")])


def test_round_trip_through_json():
    run = _run()
    again = RunRecord.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again == run and again.schema_version == SCHEMA_VERSION
    assert isinstance(again.models["m"], ModelRecord) and isinstance(again.checks[0], CheckRecord)


def test_a_schema_1_record_loads_and_unknown_fields_are_ignored():
    old = {"run_id": "r", "models": {"m": {"weight_hash": "h", "clean_acc": 0.5}},
           "measurements": [{"key": "acc(m)", "kind": "acc", "value": 0.5, "a_field_from_the_future": 1}],
           "checks": [{"spec": "s", "nodeid": "n", "check": "acc(m) > 0"}], "config": {"data": "digits"}}
    run = RunRecord.from_dict(old)
    assert run.schema_version == 1 and run.models["m"].name == "m" and run.measurements[0].value == 0.5
    assert run.checks[0].status == "error"


def test_spec_ids_in_order_of_first_appearance():
    run = _run()
    run.measurements.append(MeasurementRecord(key="acc(x)", kind="acc", spec="t"))
    assert run.spec_ids() == ["s", "t"] and run.checks_of("s") == run.checks


def test_run_ids_sort_by_time_and_differ():
    a, b = new_run_id(), new_run_id()
    assert a != b and len(a) == len("20260101-000000-abcd")
