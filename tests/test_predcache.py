"""Predictions cached on disk, and adversarial sets made in shards.

A warm engine reads every prediction and loads no adversarial image; a set made in shards is
the set a distributed run makes shard by shard; the predictions of a shard are keyed by the
shard, so whoever made the shard can score it. Real fixture models on digits images.
"""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vitrobust.adversarial import AttackConfig, shard_images, shard_ranges
from vitrobust.dataslice import DataSlice
from vitrobust.engine import Engine
from vitrobust.errors import VitrobustError
from vitrobust.names import ModelName
from vitrobust.predcache import PredCache

SLICE = DataSlice(limit=32)
FGSM = AttackConfig.from_spec({"name": "fgsm", "eps": 4 / 255})
SQUARE = AttackConfig.from_spec({"name": "square", "eps": 8 / 255, "n_queries": 5})   # draws noise


def _engine(root, **kwargs):
    return Engine(adv_cache_dir=root, progress=False, **kwargs)


def _scores(engine, attack=FGSM):
    return (engine.clean_correct("cnn_fixture", SLICE).tolist(),
            engine.fooled("vit_fixture", "cnn_fixture", attack, SLICE).tolist(),
            engine.fooled("vit_fixture", "vit_fixture", attack, SLICE).tolist())


def test_a_warm_engine_reads_predictions_and_loads_no_adversarial_image(tmp_path, monkeypatch):
    cold = _engine(tmp_path)
    made = _scores(cold)
    assert cold.predictions.stats == {"generated": 3, "reused": 0}

    warm = _engine(tmp_path)

    def no_images(*args, **kwargs):
        raise AssertionError("a warm run loaded adversarial images")

    monkeypatch.setattr(warm.adversarial, "shard", no_images)
    monkeypatch.setattr(warm, "_predict", no_images)   # and scored nothing
    assert _scores(warm) == made
    assert warm.predictions.stats == {"generated": 0, "reused": 3}
    assert warm.adv_cache.stats == {"generated": 0, "reused": 0}
    assert "scoring" not in {item["kind"] for item in warm.profile.items()}
    assert "scoring" in {item["kind"] for item in cold.profile.items()}


def test_predictions_are_keyed_by_model_inputs_device_and_precision(tmp_path):
    engine = _engine(tmp_path)
    vit, cnn = engine.model("vit_fixture"), engine.model("cnn_fixture")
    base = PredCache.material(vit, {"adversarial": "k"}, "cpu", "fp32")
    others = [PredCache.material(cnn, {"adversarial": "k"}, "cpu", "fp32"),
              PredCache.material(vit, {"adversarial": "k2"}, "cpu", "fp32"),
              PredCache.material(vit, {"adversarial": "k"}, "cuda", "fp32"),
              PredCache.material(vit, {"adversarial": "k"}, "cpu", "bf16")]
    keys = {PredCache.key(m) for m in [base, *others]}
    assert len(keys) == 5


def test_a_damaged_prediction_is_rebuilt_not_read(tmp_path, caplog):
    engine = _engine(tmp_path)
    first = engine.clean_correct("vit_fixture", SLICE).tolist()
    [manifest] = (tmp_path / "predictions").glob("??/*.json")
    blob = next((tmp_path / "predictions" / "blobs").glob("??/*.pt"))
    blob.write_bytes(blob.read_bytes()[:-7])   # torn
    again = _engine(tmp_path)
    assert again.clean_correct("vit_fixture", SLICE).tolist() == first
    assert again.predictions.stats == {"generated": 1, "reused": 0}
    assert any("predictions cache entry" in r.message and "torn" in r.message for r in caplog.records)
    assert manifest.exists()


@given(st.integers(0, 5000), st.integers(1, 700))
def test_shards_cover_the_images_in_order_each_at_most_the_size(n, size):
    ranges = shard_ranges(n, size)
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a < b or n == 0 for a, b in ranges)
    assert all(b - a <= size for a, b in ranges)
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
    assert len(ranges) == max(1, -(-n // size))


def test_shard_size_comes_from_the_environment_and_bad_values_are_one_line(monkeypatch):
    monkeypatch.setenv("VITROBUST_SHARD_IMAGES", "12")
    assert shard_images() == 12
    for bad in ("0", "many"):
        monkeypatch.setenv("VITROBUST_SHARD_IMAGES", bad)
        with pytest.raises(VitrobustError, match="VITROBUST_SHARD_IMAGES"):
            shard_images()


def test_a_one_shard_set_keeps_the_unsharded_key(tmp_path):
    engine = _engine(tmp_path)
    plan = engine.adversarial.plan(ModelName("vit_fixture"), FGSM, SLICE)
    material = engine.adversarial.material(ModelName("vit_fixture"), FGSM, SLICE)
    assert len(plan.shards) == 1 and plan.key == plan.shards[0].key == engine.adv_cache.key(material)


def test_a_sharded_set_is_its_shards_joined_and_scores_like_a_whole_one(tmp_path, monkeypatch):
    whole = _engine(tmp_path / "whole")
    monkeypatch.setenv("VITROBUST_SHARD_IMAGES", "10")
    sharded = _engine(tmp_path / "sharded")
    plan = sharded.adversarial.plan(ModelName("vit_fixture"), FGSM, SLICE)
    assert [(s.start, s.stop) for s in plan.shards] == [(0, 10), (10, 20), (20, 30), (30, 32)]
    assert len({s.key for s in plan.shards} | {plan.key}) == 5
    # FGSM draws nothing: made in shards it is the same images as made whole
    torch.testing.assert_close(sharded.adversarial_set("vit_fixture", FGSM, SLICE).images,
                               whole.adversarial_set("vit_fixture", FGSM, SLICE).images)
    assert _scores(sharded) == _scores(whole)
    assert sharded.adv_cache.stats["generated"] == 4


def test_a_random_attack_draws_its_own_noise_per_shard_and_again_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("VITROBUST_SHARD_IMAGES", "16")
    one = _engine(tmp_path / "a").adversarial_set("vit_fixture", SQUARE, SLICE).images
    two = _engine(tmp_path / "b").adversarial_set("vit_fixture", SQUARE, SLICE).images
    assert torch.equal(one, two)   # a seed per (set, shard): the same images in every run
    clean = _engine(tmp_path / "c").data(SLICE, one.shape[-1]).images
    assert not torch.equal(one[:16] - clean[:16], one[16:] - clean[16:])
