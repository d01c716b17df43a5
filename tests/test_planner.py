"""The planner (vitrobust/planner.py): the units a selection of checks needs, named by the
engine's own cache keys, deduplicated, and marked cached once a run has made them."""
import json

import pytest

from spec_helpers import fresh_cache  # noqa: F401  (a fixture)

from vitrobust import cli, unit_costs
from vitrobust.names import ModelName
from vitrobust.planner import plan
from vitrobust.selection import SelectionError, select
from vitrobust.zoo import build

SPEC = """
id: planned
about: two attacks on one fixture model, one set scored on two targets
data: {split: test, limit: 40}
attacks:
  fgsm: {name: fgsm, eps: 2/255}
  fgsm_again: {name: fgsm, eps: 2/255}      # the same configuration: the same set
  pgd: {name: pgd, eps: 4/255, steps: 3}
checks:
  - asr(vit_fixture, pgd) > asr(vit_fixture, fgsm)
  - transfer(vit_fixture -> vit_fixture_wide, fgsm_again) < 1.01
  - acc(vit_fixture_wide) > 0.5
"""

OTHER = """
id: planned_too
about: another spec needing one of the same sets and a variant
data: {split: test, limit: 40}
attacks:
  f: {name: fgsm, eps: 2/255}
checks:
  - asr(vit_fixture, f) >= 0
  - size_mb(vit_fixture:prune0.7) < 100
"""


@pytest.fixture(scope="module", autouse=True)
def trained():
    """The fixture models these specs name, trained once if this is a fresh cache (CI), so the
    plans below find them cached."""
    from vitrobust.zoo import load_model

    for name in ("vit_fixture", "vit_fixture_wide", "vit_fixture:prune0.7"):
        load_model(name, progress=False)


@pytest.fixture
def specs(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "planned.yaml").write_text(SPEC)
    (folder / "planned_too.yaml").write_text(OTHER)
    return folder


def _args(tmp_path, *extra):
    return [str(tmp_path / "specs"), f"--rootdir={tmp_path}", "--vitrobust-no-progress", *extra]


def test_units_are_deduplicated_across_checks_and_specs(tmp_path, specs, fresh_cache):
    selected, engine = select(_args(tmp_path))
    result = plan(engine, selected)
    assert result.checks == 5
    assert [u.model for u in result.of("model")] == ["vit_fixture", "vit_fixture_wide", "vit_fixture:prune0.7"]
    assert sorted(u.model for u in result.of("clean")) == ["vit_fixture", "vit_fixture_wide"]
    sets = {u.attack.split(",")[0].split(":")[0]: u for u in result.of("adversarial")}
    assert set(sets) == {"pgd", "fgsm"}                       # fgsm, fgsm_again and f: one set
    fgsm = sets["fgsm"]
    assert fgsm.targets == ["vit_fixture", "vit_fixture_wide"] and fgsm.specs == ["planned", "planned_too"]
    assert fgsm.attack == "fgsm, fgsm_again, f: fgsm eps=2/255"
    assert all(u.shard == "1/1" and u.images == 40 for u in result.of("adversarial") + result.of("clean"))
    assert result.of("model")[2].needs == ["vit_fixture"]    # a variant waits for its base


def test_unit_keys_are_the_engines_cache_keys_and_flip_to_cached_after_a_run(tmp_path, specs, fresh_cache):
    selected, engine = select(_args(tmp_path))
    before = plan(engine, selected)
    sets = before.of("adversarial")
    assert sets and all(u.cached is False and u.key.startswith("adversarial/") for u in sets)
    assert all(u.cached is True for u in before.of("model"))   # the fixture models are cached
    assert all(u.cached is False and u.key.startswith("predictions/") for u in before.of("clean"))
    made = {u.key: engine.adversarial.get(ModelName(u.model), u.config, u.slice) for u in sets}
    assert {f"adversarial/{m.key}" for m in made.values()} == set(made)   # the engine's own keys
    half = plan(engine, selected)   # the sets are made, but no target has scored them yet
    assert not any(u.cached for u in half.of("adversarial"))
    for u in sets:
        for target in u.targets:
            engine.fooled(u.model, target, u.config, u.slice)
    for u in before.of("clean"):
        engine.clean_correct(u.model, u.slice)
    after = plan(engine, selected)
    assert all(u.cached is True for u in after.units)
    assert [u.key for u in after.of("adversarial")] == [u.key for u in sets]
    assert after.totals()["adversarial"]["todo"] == 0 and before.totals()["adversarial"]["todo"] == 2


def test_a_slice_larger_than_a_shard_is_one_unit_per_shard(tmp_path, specs, fresh_cache, monkeypatch):
    monkeypatch.setenv("VITROBUST_SHARD_IMAGES", "15")
    selected, engine = select(_args(tmp_path, "-k", "transfer"))
    result = plan(engine, selected)
    shards = result.of("adversarial")
    assert [(u.shard, u.images) for u in shards] == [("1/3", 15), ("2/3", 15), ("3/3", 10)]
    set_plan = engine.adversarial.plan(ModelName(shards[0].model), shards[0].config, shards[0].slice)
    assert [u.key for u in shards] == [f"adversarial/{s.key}" for s in set_plan.shards]
    assert all(u.targets == ["vit_fixture_wide"] for u in shards)
    assert [u.shard for u in result.of("clean")] == ["1/3", "2/3", "3/3"]


def test_k_selects_as_pytest_does(tmp_path, specs, fresh_cache):
    selected, engine = select(_args(tmp_path, "-k", "acc"))
    result = plan(engine, selected)
    assert [s.check.text for s in selected] == ["acc(vit_fixture_wide) > 0.5"]
    assert not result.of("adversarial") and [u.model for u in result.of("model")] == ["vit_fixture_wide"]


def test_a_model_that_would_train_is_planned_not_trained(tmp_path, specs, monkeypatch):
    empty = tmp_path / "empty-cache"
    monkeypatch.setenv("VITROBUST_CACHE", str(empty))
    monkeypatch.setattr(build, "_LOADED", {})   # forget the models this process built from the full cache
    selected, engine = select(_args(tmp_path, "-k", "planned_too"))
    result = plan(engine, selected)
    base, variant = result.of("model")
    assert base.cached is False and base.key.startswith("models/vit_fixture-")
    assert variant.pending and "once vit_fixture is built" in variant.note
    assert all(u.pending for u in result.of("adversarial"))   # their key needs the source's weights
    assert not (empty / "models").exists() or not list((empty / "models").rglob("*.json"))   # nothing trained


def test_costs_come_from_the_measured_table(tmp_path, specs, fresh_cache, monkeypatch):
    monkeypatch.setitem(unit_costs.PASS_SECONDS, "vit_fixture", (0.001, 0.003))
    monkeypatch.setattr(unit_costs, "ATTACK_PASSES", {("pgd", (("eps", 4 / 255), ("steps", 6))): (5.0, "image", "gradient")})
    selected, engine = select(_args(tmp_path, "-k", "pgd"))
    result = plan(engine, selected)
    pgd = [u for u in result.of("adversarial") if u.attack.startswith("pgd")][0]
    assert pgd.cost == pytest.approx(40 * 2.5 * 0.003)   # 3 steps: half the passes of the 6 measured
    clean = [u for u in result.of("clean") if u.model == "vit_fixture"][0]
    assert clean.cost == pytest.approx(40 * 0.001)


def test_plan_command_prints_units_and_totals(tmp_path, specs, fresh_cache, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plan", "specs", "--json", "--vitrobust-no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["totals"]["adversarial"] == {**out["totals"]["adversarial"], "units": 2, "todo": 2}
    assert {u["kind"] for u in out["units"]} == {"model", "clean", "adversarial"}
    assert cli.main(["plan", "specs", "-k", "transfer", "--vitrobust-no-progress"]) == 0
    table = capsys.readouterr().out
    assert "fgsm_again: fgsm eps=2/255" in table and "vit_fixture_wide" in table
    assert "adversarial: 1 units, 0 cached, 1 to make" in table


def test_a_spec_that_does_not_collect_is_one_error(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "bad.yaml").write_text("id: bad\nabout: x\nchecks: [asr(nope, x) > 0]\n")
    with pytest.raises(SelectionError, match="collecting the selected specs failed"):
        select(_args(tmp_path))
