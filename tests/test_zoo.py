"""The zoo: registry, names along their chain, the wrapper, the weight cache, checkpoints."""
import hashlib
import json

import pytest
import torch

from vitrobust.errors import VitrobustError
from vitrobust.names import ModelNameError
from vitrobust.zoo import (CheckpointError, ModelInfo, ModelWrapper, UnknownModelError, list_models,
                           load_checkpoint, load_model)
from vitrobust.zoo import build, cache
from vitrobust.zoo.variant import inherit_augment, variant_recipe, variant_wrapper


def test_default_zoo_is_registered():
    names = list_models()
    for name in ("deit_tiny", "deit_small", "deit_base", "cnn_small",
                 "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"):
        assert name in names
    assert list_models("deit_*_patch16_224") == [
        "deit_base_patch16_224", "deit_small_patch16_224", "deit_tiny_patch16_224"]


def test_default_sizes_keep_the_paper_ordering():
    from vitrobust.zoo.deit import deit_base, deit_small, deit_tiny

    counts = [sum(p.numel() for p in b().parameters()) for b in (deit_tiny, deit_small, deit_base)]
    assert counts == sorted(counts) and len(set(counts)) == 3
    assert deit_tiny().patch_embed.num_patches == 64


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UnknownModelError, match="unknown model 'deit_huge'; known: .*deit_tiny") as info:
        load_model("deit_huge")
    assert isinstance(info.value, VitrobustError) and str(info.value).startswith("unknown model")
    with pytest.raises(UnknownModelError, match="unknown model 'deit_huge'"):
        load_model("deit_huge:int8")
    with pytest.raises(ModelNameError):
        load_model("vit_fixture::int8")


def test_suffixes_apply_along_the_chain(monkeypatch):
    from vitrobust import compress

    applied = []
    real = compress.apply_compression

    def spy(model, suffix, name, progress=True):
        applied.append((model.name, suffix, name))
        return real(model, suffix, name, progress)

    monkeypatch.setattr(compress, "apply_compression", spy)
    monkeypatch.setattr(build, "_LOADED", {})
    model = load_model("vit_fixture:prune0.7:int8", progress=False)
    assert applied == [("vit_fixture", "prune0.7", "vit_fixture:prune0.7"),
                       ("vit_fixture:prune0.7", "int8", "vit_fixture:prune0.7:int8")]
    assert model.name == "vit_fixture:prune0.7:int8" and type(model.name) is str
    assert load_model("vit_fixture:prune0.7:int8") is model        # built once per process


def test_wrapper_normalizes_and_averages_heads():
    class TwoHeads(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :3], torch.zeros(len(x), 3)

    wrapper = ModelWrapper(TwoHeads(), ModelInfo("two"), mean=(0.5,) * 3, std=(0.25,) * 3)
    out = wrapper(torch.ones(2, 3, 1, 1))
    assert out.shape == (2, 3)
    assert torch.allclose(out, torch.full((2, 3), 1.0))   # ((1 - 0.5) / 0.25 + 0) / 2


def test_normalization_carries_over_to_derived_wrappers():
    base = ModelWrapper(torch.nn.Identity(), ModelInfo("b", data="digits", input_size=8, num_classes=3,
                                                       recipe={"augment": False, "variant_epochs": 2}),
                        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert base.normalization == (tuple(base.mean.flatten().tolist()), tuple(base.std.flatten().tolist()))
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(base.normalize(x), (x - base.mean) / base.std)
    variant = variant_wrapper("b:v", base, torch.nn.Identity(), differentiable=False, meta={"k": 1})
    assert torch.equal(variant.mean, base.mean) and torch.equal(variant.std, base.std)
    assert (variant.info.data, variant.info.input_size, variant.info.num_classes) == ("digits", 8, 3)
    assert variant.info.recipe == base.info.recipe and variant.info.recipe is not base.info.recipe
    assert not variant.info.differentiable and variant.info.meta == {"k": 1}


def test_variant_recipes_follow_the_base():
    fixture = ModelWrapper(torch.nn.Identity(), ModelInfo("b", recipe={"augment": False, "variant_epochs": 2}))
    plain = ModelWrapper(torch.nn.Identity(), ModelInfo("b", recipe={"epochs": 30}))
    recipe = {"epochs": 8, "lr": 1e-3}
    assert variant_recipe(fixture, recipe) == {"epochs": 2, "lr": 1e-3}
    assert variant_recipe(plain, recipe) == recipe and variant_recipe(plain, recipe) is not recipe
    assert inherit_augment(fixture, recipe) == {"epochs": 8, "lr": 1e-3, "augment": False}
    assert inherit_augment(fixture, {**recipe, "augment": True})["augment"] is True   # the recipe's own wins
    assert inherit_augment(plain, recipe) == recipe


def test_trained_model_is_accurate_and_cached(vit_model, digits_test, monkeypatch):
    acc = (vit_model.predict(digits_test.images) == digits_test.labels).float().mean().item()
    assert acc > 0.6   # 10 classes, chance is 0.1: the 7-second fixture is trained, not good
    # a second build in a fresh process state loads from the disk cache: training must not run
    monkeypatch.setattr(build, "_LOADED", {})
    monkeypatch.setattr(build, "fit", lambda *a, **k: pytest.fail("retrained despite the cache"))
    again = load_model("vit_fixture", progress=False)
    assert again.info.weight_hash == vit_model.info.weight_hash


def test_cache_key_changes_with_recipe_and_data():
    a = cache.cache_key("m", {"epochs": 1}, "data1")
    assert a != cache.cache_key("m", {"epochs": 2}, "data1")
    assert a != cache.cache_key("m", {"epochs": 1}, "data2")
    assert a == cache.cache_key("m", {"epochs": 1}, "data1")


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_saved_weights_round_trip_and_leave_no_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VITROBUST_CACHE", str(tmp_path))
    path = cache.save_weights("vit:int8", "k1", {"w": torch.arange(3.0)})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert path == tmp_path / "models" / "blobs" / digest[:2] / f"{digest}.pt"   # named by its content
    files = [f"blobs/{digest[:2]}/{digest}.pt", "vit__int8-k1.json"]
    assert _files(tmp_path / "models") == files
    assert json.loads((tmp_path / "models" / "vit__int8-k1.json").read_text())["blob"] == digest
    assert torch.equal(cache.load_weights("vit:int8", "k1")["w"], torch.arange(3.0))
    with pytest.raises(RuntimeError):       # a failed write leaves the old entry and no temporary
        cache.save_weights("vit:int8", "k1", {"w": _Unpicklable()})
    assert _files(tmp_path / "models") == files
    assert torch.equal(cache.load_weights("vit:int8", "k1")["w"], torch.arange(3.0))


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


def test_cache_key_material_is_pinned():
    # Caches built by earlier versions must stay valid: the key is exactly this material.
    import hashlib
    import json

    from vitrobust import __version__

    material = {"name": "m:int8", "recipe": {"lr": 1e-3}, "data": "d1", "extra": {"base": "h"},
                "vitrobust": __version__, "training_code": cache.TRAINING_CODE_VERSION,
                "torch": torch.__version__.split("+")[0]}
    expected = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert cache.cache_key("m:int8", {"lr": 1e-3}, "d1", base="h") == expected
    assert cache.TRAINING_CODE_VERSION == 1


def test_state_hash_is_pinned():
    state = {"b.weight": torch.arange(6.0).view(2, 3), "a": torch.tensor([1, 2], dtype=torch.int8), "note": "x"}
    assert cache.state_hash(state) == "b1ebd75f820123be"
    assert cache.state_hash({**state, "a": torch.tensor([1, 3], dtype=torch.int8)}) != "b1ebd75f820123be"


def test_corrupt_cache_file_is_a_miss(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("VITROBUST_CACHE", str(tmp_path))
    cache.save_weights("m", "k", {"w": torch.ones(2)}).write_bytes(b"garbage")
    assert cache.load_weights("m", "k") is None
    assert "torn blob" in caplog.text


def test_flipped_byte_that_still_loads_is_caught_by_the_checksum(tmp_path, monkeypatch, caplog):
    """Before the checksum, a flipped byte in a weight's value loaded as other weights, silently."""
    monkeypatch.setenv("VITROBUST_CACHE", str(tmp_path))
    weights = torch.full((64,), 0.5)
    path = cache.save_weights("m", "k", {"w": weights})
    data = bytearray(path.read_bytes())
    at = bytes(data).index(weights.numpy().tobytes())
    data[at + 1] ^= 0x01                                       # one float of "w", a little off
    path.write_bytes(bytes(data))
    assert not torch.equal(torch.load(path, weights_only=True)["w"], weights)   # it still loads
    assert cache.load_weights("m", "k") is None and "checksum mismatch" in caplog.text
    assert not (tmp_path / "models" / "m-k.json").exists()     # dropped, so the model is retrained


def test_weights_of_the_layout_before_are_adopted(tmp_path, monkeypatch):
    monkeypatch.setenv("VITROBUST_CACHE", str(tmp_path))
    (tmp_path / "models").mkdir()
    torch.save({"w": torch.arange(4.0)}, tmp_path / "models" / "m__int8-k.pt")
    assert torch.equal(cache.load_weights("m:int8", "k")["w"], torch.arange(4.0))
    assert json.loads((tmp_path / "models" / "m__int8-k.json").read_text())["protocol"] == 1
    (tmp_path / "models" / "m__int8-k.pt").write_bytes(b"garbage")   # the re-stored copy is read now
    assert torch.equal(cache.load_weights("m:int8", "k")["w"], torch.arange(4.0))
    assert cache.load_weights("m:int8", "other") is None


def test_full_size_model_loads_a_local_checkpoint(tmp_path):
    model = load_model("deit_tiny_patch16_224", progress=False)
    state = {k: torch.full_like(v, 0.01) for k, v in model.net.state_dict().items()}
    path = tmp_path / "deit_tiny.pth"
    torch.save({"model": state}, path)   # the layout of DeiT's released checkpoints
    loaded = load_model("deit_tiny_patch16_224", checkpoint=str(path), progress=False)
    assert torch.allclose(loaded.net.head.weight, torch.full_like(loaded.net.head.weight, 0.01))
    assert loaded.info.input_size == 224


def test_checkpoint_with_wrong_shape_or_foreign_keys_is_clear(tmp_path):
    net = load_model("vit_fixture", progress=False).net
    state = dict(net.state_dict())
    state["head.weight"] = torch.zeros(3, 3)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"bad.pt: .*shape mismatch for head.weight.*unexpected keys \['extra.weight'\]"):
        load_checkpoint(net, path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(net, tmp_path / "missing.pt")


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"refused by torch.load\(weights_only=True\): it holds pickled code \(print\)"):
        load_checkpoint(torch.nn.Linear(1, 1), path)


def test_fit_param_groups_keep_their_own_scheduled_lr(digits_test, monkeypatch):
    """Each param group keeps its lr ratio under warmup-cosine; frozen tensors stay untouched."""
    from vitrobust.zoo import train as train_mod

    seen = []

    class SpyAdamW(torch.optim.AdamW):
        def step(self, *args, **kwargs):
            seen.append([g["lr"] for g in self.param_groups])
            return super().step(*args, **kwargs)

    monkeypatch.setattr(train_mod.torch.optim, "AdamW", SpyAdamW)
    torch.manual_seed(0)
    net = torch.nn.ModuleDict({"fast": torch.nn.Linear(3 * 32 * 32, 10),
                               "slow": torch.nn.Linear(3 * 32 * 32, 10),
                               "frozen": torch.nn.Linear(1, 1)})
    net["frozen"].weight.requires_grad_(False)
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def loss_fn(model, images, labels):
        flat = images.flatten(1)
        return torch.nn.functional.cross_entropy(model["fast"](flat) + model["slow"](flat), labels)

    groups = [{"params": net["fast"].parameters(), "lr": 1e-2},
              {"params": list(net["slow"].parameters()) + [net["frozen"].weight], "lr": 1e-4}]
    recipe = {"epochs": 2, "batch_size": 32, "warmup_epochs": 1, "lr": 5.0, "augment": False}
    train_mod.fit(net, digits_test.limit(128), recipe, loss_fn=loss_fn, params=groups, progress=False)

    lrs = torch.tensor(seen)
    assert lrs.shape == (8, 2)  # 2 epochs x 4 batches; the frozen tensor was filtered out
    assert torch.allclose(lrs[:, 0] / lrs[:, 1], torch.full((8,), 100.0))
    assert lrs[0, 0] == pytest.approx(1e-2 / 4)  # warmup step 1 of 4
    assert lrs[3, 0] == pytest.approx(1e-2) and lrs[-1, 0] < 1e-2 / 2  # then cosine decay
    moved = {k: (net.state_dict()[k] - before[k]).abs().max().item() for k in before}
    assert moved["fast.weight"] > 20 * moved["slow.weight"] > 0
    assert moved["frozen.weight"] == 0


def test_a_replica_shifts_every_recipe_seed_and_keys_apart():
    from vitrobust.zoo import cache
    from vitrobust.zoo.replicas import SEED_STRIDE, replica_of, replica_recipe

    recipe = {"epochs": 2, "lr": 1e-3, "seed": 1}
    assert replica_recipe(recipe, 0) == recipe   # the default zoo's keys do not change
    second = replica_recipe(recipe, 2)
    assert second == {"epochs": 2, "lr": 1e-3, "seed": 1 + 2 * SEED_STRIDE, "replica": 2}
    assert replica_of(second) == 2 and replica_of(recipe) == 0
    assert cache.cache_key("m", second, "fp") != cache.cache_key("m", recipe, "fp")


def test_a_variant_of_a_replica_is_trained_with_the_replica_seed(vit_model):
    from vitrobust.zoo.replicas import SEED_STRIDE
    from vitrobust.zoo.variant import variant_recipe
    from vitrobust.zoo.wrapper import ModelInfo, ModelWrapper

    base = ModelWrapper(vit_model.net, ModelInfo("vit_fixture@s1", recipe={**vit_model.info.recipe, "replica": 1}))
    recipe = variant_recipe(base, {"epochs": 3, "seed": 0})
    assert recipe["seed"] == SEED_STRIDE and recipe["replica"] == 1
    assert variant_recipe(vit_model, {"epochs": 3, "seed": 0})["seed"] == 0
