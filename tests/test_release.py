"""The shipped default zoo: every model loads to its recorded weights, and only those."""
import json

import pytest
import torch

from vitrobust.zoo import build, release
from vitrobust.zoo.cache import state_hash

MANIFEST = release.manifest()


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty user cache and no model built yet: what a newcomer's first run sees."""
    monkeypatch.setenv("VITROBUST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "_LOADED", {})
    monkeypatch.setattr(release, "BUILT", {})

    def no_training(*args, **kwargs):
        raise AssertionError("trained instead of loading the shipped weights")

    for module in ("vitrobust.zoo.train", "vitrobust.zoo.build", "vitrobust.compress.prune",
                   "vitrobust.compress.distill", "vitrobust.compress.multiplex", "vitrobust.compress.advtrain"):
        monkeypatch.setattr(f"{module}.fit", no_training, raising=False)
    return tmp_path


def test_the_release_covers_every_model_the_shipped_specs_train():
    from vitrobust.spec import load_specs

    named = set()
    load_specs("specs", known_models=lambda name: named.add(str(name)) is None)
    trained = {n.split(":int8")[0] for n in named}   # INT8 is derived from its parent, not trained
    assert trained <= set(MANIFEST), sorted(trained - set(MANIFEST))
    assert len(MANIFEST) == 20


def test_every_shipped_model_loads_to_its_recorded_hash_without_training(fresh):
    # one session for all twenty: a variant's release key holds its base's weight hash, so the
    # bases must load to theirs for the variants to be found at all
    hashes = {name: build.load_model(name, progress=False).info.weight_hash for name in sorted(MANIFEST)}
    assert hashes == {name: entry["weight_hash"] for name, entry in MANIFEST.items()}
    assert {build.load_model(n, progress=False).info.meta.get("weights") for n in MANIFEST} == {"shipped with vitrobust"}
    assert not list((fresh / "cache").rglob("*.pt"))   # nothing trained, nothing cached


def _release_of(folder, state, key="k1"):
    from types import SimpleNamespace

    model = SimpleNamespace(net=SimpleNamespace(state_dict=lambda: state), info=SimpleNamespace(meta={}))
    release.remember("m", key, model)
    release.write_release(["m"], folder)


def test_a_shipped_file_is_used_only_for_its_release_key(tmp_path, monkeypatch):
    monkeypatch.setattr(release, "BUILT", {})
    state = {"w": torch.arange(4.0, device="cpu")}
    _release_of(tmp_path, state)
    assert torch.equal(release.shipped_weights("m", "k1", tmp_path)["w"], state["w"])
    assert release.shipped_weights("m", "another recipe", tmp_path) is None
    assert release.shipped_weights("unknown", "k1", tmp_path) is None
    release.use_shipped(False)   # zoo build --release: never reload the release itself
    try:
        assert release.shipped_weights("m", "k1", tmp_path) is None
    finally:
        release.use_shipped(True)


def test_a_damaged_shipped_file_is_an_error_not_used(tmp_path, monkeypatch):
    monkeypatch.setattr(release, "BUILT", {})
    _release_of(tmp_path, {"w": torch.arange(4.0, device="cpu")})
    torch.save({"w": torch.zeros(4, device="cpu")}, tmp_path / "m.pt")
    with pytest.raises(release.ReleaseError, match="do not hash to the manifest's"):
        release.shipped_weights("m", "k1", tmp_path)
    (tmp_path / "m.pt").write_bytes(b"truncated")
    with pytest.raises(release.ReleaseError, match="do not load"):
        release.shipped_weights("m", "k1", tmp_path)


def test_the_release_key_ignores_the_machine_but_not_the_recipe():
    key = release.release_key("deit_tiny", {"epochs": 20}, "digits")
    assert key == release.release_key("deit_tiny", {"epochs": 20}, "digits")
    assert key != release.release_key("deit_tiny", {"epochs": 21}, "digits")
    assert key != release.release_key("deit_tiny", {"epochs": 20}, "digits", base="other weights")
    assert json.loads((release.RELEASE_DIR / "manifest.json").read_text()) == MANIFEST
    assert all(state_hash(torch.load(release.RELEASE_DIR / e["file"], weights_only=True)) == e["weight_hash"]
               for e in list(MANIFEST.values())[:3])
