"""The engine on its own: measures computed once, records that agree, caches that do not grow.

Real (tiny, trained) fixture models on 32 digits images; every attack is cheap.
"""
import numpy as np
import pytest
import torch

from vitrobust.dataslice import DataSlice
from vitrobust.engine import Engine
from vitrobust.expr import measures, parse_check
from vitrobust.record import MeasurementRecord

DATA = {"split": "test", "limit": 32}
ATTACKS = {"fgsm": {"name": "fgsm", "eps": 4 / 255}, "pgd": {"name": "pgd", "eps": 4 / 255, "steps": 3},
           "uap": {"name": "uap_pgd", "eps": 8 / 255, "epochs": 1},
           "uap_big": {"name": "uap_pgd", "eps": 16 / 255, "epochs": 1}}


@pytest.fixture
def engine(tmp_path):
    return Engine(adv_cache_dir=tmp_path / "adv", progress=False)


def _check(engine, text, confidence=None, attacks=ATTACKS, data=DATA):
    return engine.evaluate(parse_check(text), attacks, data, "spec", confidence)


def test_each_measure_is_computed_and_recorded_once(engine):
    _check(engine, "asr(vit_fixture, pgd) > asr(vit_fixture, fgsm)")
    _check(engine, "asr(vit_fixture, pgd) >= 0")
    keys = [r.key for r in engine.measurements.values()]
    assert sorted(keys) == ["asr(vit_fixture, fgsm)", "asr(vit_fixture, pgd)"]
    assert all(isinstance(r, MeasurementRecord) for r in engine.measurements.values())
    assert engine.adv_cache.stats == {"generated": 2, "reused": 0}


def test_robust_acc_matches_the_attack_record_and_counts_every_image(engine):
    _check(engine, "robust_acc(vit_fixture, pgd) <= acc(vit_fixture)")
    _check(engine, "asr(vit_fixture, pgd) >= 0")
    by_key = {r.key: r for r in engine.measurements.values()}
    robust, asr = by_key["robust_acc(vit_fixture, pgd)"], by_key["asr(vit_fixture, pgd)"]
    assert robust.n == 32 and robust.value == pytest.approx(asr.robust_acc)
    assert robust.alias == "pgd" and robust.strategy == "white-box"


def test_intervals_use_the_confidence_the_check_is_decided_at(engine):
    _check(engine, "acc(vit_fixture) > 0.1", confidence=0.8)
    [record] = engine.measurements.values()
    wide = Engine(progress=False)
    _check(wide, "acc(vit_fixture) > 0.1", confidence=0.99)
    [other] = wide.measurements.values()
    assert record.confidence == 0.8 and other.confidence == 0.99
    assert other.interval[1] - other.interval[0] > record.interval[1] - record.interval[0]


def test_side_by_side_throughput_is_the_one_value_every_reader_sees(engine):
    _check(engine, "throughput(vit_fixture) > 0")                 # timed alone: memoized
    _check(engine, "throughput(vit_fixture) >= throughput(cnn_fixture) * 0")   # re-timed side by side
    again = engine.observe(measures(parse_check("throughput(vit_fixture) > 0"))[0], ATTACKS, DATA)
    record = next(r for r in engine.measurements.values() if r.key == "throughput(vit_fixture)")
    assert again.value == record.value == engine.model_records["vit_fixture"].throughput


def test_models_compared_for_speed_are_timed_side_by_side_only(engine, monkeypatch):
    from vitrobust import metrics

    timed, real = [], metrics.throughput
    monkeypatch.setattr(metrics, "throughput", lambda model, *a, **k: timed.append(model.name) or real(model, *a, **k))
    _check(engine, "throughput(vit_fixture) >= throughput(cnn_fixture) * 0")
    assert sorted(timed) == ["cnn_fixture"] * 3 + ["vit_fixture"] * 3   # three alternating rounds, nothing alone
    record = next(r for r in engine.measurements.values() if r.key == "throughput(cnn_fixture)")
    assert record.value == engine.model_records["cnn_fixture"].throughput > 0


def test_uap_artifacts_are_named_by_their_set_and_do_not_grow_across_sessions(tmp_path):
    for _ in range(2):   # two sessions on one cache
        engine = Engine(adv_cache_dir=tmp_path / "adv", progress=False)
        _check(engine, "asr(vit_fixture, uap) >= 0")
        _check(engine, "asr(vit_fixture, uap_big) >= 0")
    files = sorted((tmp_path / "adv" / "artifacts").glob("*.npy"))
    assert len(files) == 2                                  # one per alias, not per session
    assert sorted(engine.artifacts.values()) == [str(f) for f in files]
    assert len(engine.artifacts) == 2                       # two aliases on one source: two entries


def test_universal_perturbations_are_fitted_on_the_spec_fit_split(engine):
    from vitrobust.adversarial import AttackConfig
    from vitrobust.data import load_dataset

    attack = AttackConfig.from_spec(ATTACKS["uap"])
    made = engine.adversarial.get("vit_fixture", attack, DataSlice(limit=32, fit_split="train", fit_limit=48))
    import json
    [meta] = (engine.adv_cache.root).rglob(f"{made.key}.json")
    material = json.loads(meta.read_text())["material"]
    assert material["fit_data"] == load_dataset("digits", "train", 48).fingerprint


def test_sanity_groups_attacks_by_their_spec_alias(engine):
    """pgd and pgd_4 share a registry name; grouped by it, the weaker one hid the stronger and
    square looked better than every white-box attack of its budget."""
    common = dict(kind="asr", spec="s", target="vit_fixture", data="d", attack="pgd")
    engine.measurements = {
        1: MeasurementRecord(key="asr(vit_fixture, pgd)", alias="pgd", value=0.9, strategy="white-box",
                             threat_model={"norm": "linf", "eps": 8 / 255}, **common),
        2: MeasurementRecord(key="asr(vit_fixture, pgd_4)", alias="pgd_4", value=0.3, strategy="white-box",
                             threat_model={"norm": "linf", "eps": 4 / 255}, **common),
        3: MeasurementRecord(key="asr(vit_fixture, sq)", alias="sq", value=0.5, strategy="black-box",
                             threat_model={"norm": "linf", "eps": 4 / 255}, **{**common, "attack": "square"}),
    }
    engine._compare_attack_kinds()
    assert [w for w in engine.warnings if w.kind == "black-box-beats-white-box"] == []


def test_outcomes_line_up_with_the_slice(engine):
    _check(engine, "asr(vit_fixture, fgsm) >= 0")
    [record] = engine.measurements.values()
    assert len(record.outcomes) == 32 and record.data == "digits/test[:32]"
    clean = engine.clean_correct("vit_fixture", engine.data_slice(DATA))
    assert [o is None for o in record.outcomes] == list(~clean)
    assert record.k == sum(o == 1 for o in record.outcomes) and record.n == int(np.sum(clean))


def _example_check(kind):
    """A check naming the measure ``kind`` with arguments of its declared shape."""
    from vitrobust.measures import measure_kind

    args = {"model": "vit_fixture", "model, attack": "vit_fixture, fgsm",
            "source -> model, attack": "cnn_fixture -> vit_fixture, fgsm"}[measure_kind(kind).args]
    return f"{kind}({args}) >= 0"


def _registered_measures():
    from vitrobust.measures import list_measures
    return list_measures()


@pytest.mark.parametrize("kind", _registered_measures())
def test_every_registered_measure_runs_through_the_engine(engine, kind):
    from vitrobust.measures import measure_kind

    verdict = _check(engine, _example_check(kind))
    [record] = [r for r in engine.measurements.values() if r.kind == kind]
    assert verdict.status == "holds" and record.value is not None and record.value >= 0
    assert (record.outcomes is not None) == measure_kind(kind).rate


def test_a_zoo_alias_reaches_the_gradient_surrogate(tmp_path):
    """deit_small:int8 aliased to another arch: straight-through must use the alias's weights."""
    from vitrobust.zoo.config import ZooConfig

    engine = Engine(zoo=ZooConfig(models={"good": {"arch": "vit_fixture"}}), adv_cache_dir=tmp_path, progress=False)
    assert engine.model("good:int8").info.surrogate == "good"
    assert engine.model("good").info.weight_hash == engine.model("vit_fixture").info.weight_hash


def test_a_uap_is_not_fitted_on_the_folder_it_is_scored_on(tmp_path, digits_test):
    # a folder with only val/: split test falls back to it, and fit_split defaults to val
    from PIL import Image

    from vitrobust.errors import VitrobustError

    three_each = [i for c in range(10) for i in np.flatnonzero(digits_test.labels.numpy() == c)[:3]]
    for i in three_each:
        image, label = digits_test.images[i], int(digits_test.labels[i])
        (tmp_path / "val" / str(label)).mkdir(parents=True, exist_ok=True)
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "val" / str(label) / f"{i}.png")
    engine = Engine(data_source=str(tmp_path), adv_cache_dir=tmp_path / "adv", progress=False)
    with pytest.raises(VitrobustError, match="fitted on the images it is scored on .*set data.fit_split"):
        _check(engine, "asr(vit_fixture, uap) >= 0", data={"limit": 10})


def test_uint8_pixels_score_like_their_floats(vit_model, digits_test):
    # folder data stays uint8 in memory; the wrapper converts it, batch by batch
    pixels = (digits_test.images[:16] * 255).round().to(torch.uint8)
    as_float = pixels.float() / 255
    assert torch.equal(vit_model.predict(pixels), vit_model.predict(as_float))
    assert torch.allclose(vit_model(pixels), vit_model(as_float))
