"""Throughputs timed once per machine (vitrobust/timings.py): what names an entry, what reads it
back, what times anew, and an engine on a warm cache that times nothing."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from vitrobust import metrics, timings
from vitrobust.engine import Engine
from vitrobust.expr import parse_check
from vitrobust.timings import SIDE_BY_SIDE, TABLE, TimingCache

CPU = torch.device("cpu")


def _model(name="tiny", weight_hash="w0"):
    return SimpleNamespace(info=SimpleNamespace(weight_hash=weight_hash, name=name, pinned_device="cpu"))


def _material(models=None, batches=None, procedure=TABLE, precision="fp32"):
    models = models or [_model()]
    return TimingCache.material(models, batches or [8] * len(models), procedure, CPU, precision)


def _timer(calls, speeds=(100.0,), batches=(8,)):
    return lambda: calls.append(1) or (list(speeds), list(batches))


def test_a_timing_is_made_once_then_read_back_by_another_process(tmp_path):
    calls = []
    first = TimingCache(tmp_path).get_or_time(_material(), _timer(calls))
    again = TimingCache(tmp_path)   # a later run: a new cache object on the same folder
    second = again.get_or_time(_material(), _timer(calls, (5.0,)))
    assert len(calls) == 1
    assert second == first and second["throughputs"] == [100.0] and second["batches"] == [8]
    assert again.stats == {"timed": 0, "reused": 1}


def test_retime_times_anew_and_replaces_the_stored_timing(tmp_path):
    calls = []
    TimingCache(tmp_path).get_or_time(_material(), _timer(calls))
    retimed = TimingCache(tmp_path, retime=True)
    assert retimed.get_or_time(_material(), _timer(calls, (250.0,)))["throughputs"] == [250.0]
    assert retimed.stats == {"timed": 1, "reused": 0}
    assert TimingCache(tmp_path).get_or_time(_material(), _timer(calls, (1.0,)))["throughputs"] == [250.0]
    assert len(calls) == 2


@pytest.mark.parametrize("change", ["weights", "name", "batch", "procedure", "precision", "threads",
                                    "torch", "host", "cpu", "order", "our code", "timm"])
def test_anything_the_speed_depends_on_names_another_entry(change, monkeypatch):
    pair = [_model("a", "wa"), _model("b", "wb")]
    base = _material(pair, procedure=SIDE_BY_SIDE)
    if change == "threads":
        monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    elif change == "torch":
        monkeypatch.setattr(torch, "__version__", "0.0.1")
    elif change == "host":
        monkeypatch.setattr(timings.platform, "node", lambda: "another-host")
    elif change == "cpu":
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": False, "cpu_name": "other"})
    elif change == "our code":
        real = timings.code()
        monkeypatch.setattr(timings, "code", lambda: {**real, "vitrobust": "another-source-hash"})
    elif change == "timm":
        monkeypatch.setattr(timings.timm, "__version__", "0.0.1")
        monkeypatch.setattr(timings, "code", timings.code.__wrapped__)   # (uncached)
    other = {
        "weights": lambda: _material([_model("a", "wa2"), pair[1]], procedure=SIDE_BY_SIDE),
        "name": lambda: _material([_model("a2", "wa"), pair[1]], procedure=SIDE_BY_SIDE),
        "batch": lambda: _material(pair, [8, 4], procedure=SIDE_BY_SIDE),
        "procedure": lambda: _material(pair, procedure=TABLE),
        "precision": lambda: _material(pair, procedure=SIDE_BY_SIDE, precision="bf16"),
        "order": lambda: _material(pair[::-1], procedure=SIDE_BY_SIDE),
    }.get(change, lambda: _material(pair, procedure=SIDE_BY_SIDE))()
    cache = TimingCache("unused-root")
    assert cache.entry(other) != cache.entry(base)


def test_the_source_hash_changes_with_any_python_file_and_nothing_else(tmp_path):
    (tmp_path / "zoo").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "zoo" / "deit.py").write_text("y = 2\n")
    before = timings.source_hash(tmp_path)
    (tmp_path / "notes.txt").write_text("not code")
    assert timings.source_hash(tmp_path) == before
    (tmp_path / "zoo" / "deit.py").write_text("y = 3\n")
    changed = timings.source_hash(tmp_path)
    (tmp_path / "zoo" / "deit.py").rename(tmp_path / "zoo" / "cnn.py")
    assert len({before, changed, timings.source_hash(tmp_path)}) == 3
    assert timings.code()["vitrobust"] == timings.source_hash(Path(timings.__file__).parent)


def test_a_stored_timing_of_other_models_is_damage_not_a_speed(tmp_path, caplog):
    """A committed entry whose JSON is whole but does not fit the request (one speed for a pair)."""
    pair = _material([_model("a", "wa"), _model("b", "wb")], procedure=SIDE_BY_SIDE)
    cache = TimingCache(tmp_path)
    cache.store.put(cache.entry(pair), b'{"throughputs": [1.0], "batches": [8]}')
    calls = []
    timing = cache.get_or_time(pair, _timer(calls, (10.0, 20.0), (8, 8)))
    assert calls == [1] and timing["throughputs"] == [10.0, 20.0]
    assert any("timing cache entry" in r.getMessage() for r in caplog.records)


# -- the engine on a warm timing cache ---------------------------------------------------------
PAIR = "throughput(vit_fixture) >= throughput(cnn_fixture) * 0"


def _count_timings(monkeypatch) -> list:
    timed, real = [], metrics.throughput
    monkeypatch.setattr(metrics, "throughput",
                        lambda model, *a, **k: timed.append(model.name) or real(model, *a, **k))
    return timed


def _session(root, check, retime=False):
    engine = Engine(adv_cache_dir=root, progress=False, retime=retime)
    engine.evaluate(parse_check(check), {}, {"split": "test", "limit": 8}, "spec")
    for name in ("vit_fixture", "cnn_fixture"):
        engine.model_summary(name, timed=True)
    return engine


def test_a_second_session_times_nothing_and_sees_the_first_sessions_speeds(tmp_path, monkeypatch):
    first = _session(tmp_path, PAIR)
    timed = _count_timings(monkeypatch)
    second = _session(tmp_path, PAIR)
    assert timed == []
    for name in ("vit_fixture", "cnn_fixture"):
        assert second.model_records[name].throughput == first.model_records[name].throughput > 0
    record = next(r for r in second.measurements.values() if r.key == "throughput(cnn_fixture)")
    assert record.value == first.model_records["cnn_fixture"].throughput
    assert second.record_parts()["cache"]["speeds_reused"] == 2
    assert second.record_parts()["cache"]["speeds_timed"] == 0
    assert not any(item["kind"] == "timing" for item in second.profile.items())


def test_a_comparison_is_never_made_of_speeds_timed_apart(tmp_path, monkeypatch):
    """Each model timed alone (the models table) is no answer for a comparison: the pair is
    timed side by side, as a group, the first time a check compares them."""
    _session(tmp_path, "throughput(vit_fixture) > 0")          # both timed alone, one at a time
    timed = _count_timings(monkeypatch)
    _session(tmp_path, PAIR)
    assert sorted(timed) == ["cnn_fixture"] * 3 + ["vit_fixture"] * 3


def test_retime_times_every_speed_again(tmp_path, monkeypatch):
    _session(tmp_path, PAIR)
    timed = _count_timings(monkeypatch)
    engine = _session(tmp_path, PAIR, retime=True)
    assert sorted(timed) == ["cnn_fixture"] * 3 + ["vit_fixture"] * 3   # the pair; the table's rows follow it
    assert engine.record_parts()["cache"]["speeds_timed"] == 2
