"""The zoo config: entries for any model name, their keys, and what resolve() hands load_model."""
import re
from pathlib import Path

import pytest

from vitrobust.errors import VitrobustError
from vitrobust.zoo.config import ZooConfig, ZooConfigError
from vitrobust.zoo.plan import ModelSource, ZooPlan


def _load(tmp_path, text):
    """Load ``text`` as a zoo config; its absolute checkpoint paths move under ``tmp_path`` and
    are written there (a config is refused when a checkpoint is missing or empty)."""
    text = re.sub(r"checkpoint: /", f"checkpoint: {tmp_path}/", text)
    for ckpt in re.findall(r"checkpoint: (/[^,}\s]+)", text):
        Path(ckpt).parent.mkdir(parents=True, exist_ok=True)
        Path(ckpt).write_bytes(b"not read when the config is loaded")
    path = tmp_path / "zoo.yaml"
    path.write_text(text)
    return ZooConfig.load(path)


USER_ZOO = """
data: /data/imagenet
models:
  deit_small: {arch: deit_small_patch16_224, checkpoint: /ckpt/deit_s.pth}
  deit_small:prune0.7: {checkpoint: /ckpt/dynamicvit_deit_s_0.7.pth}
  deit_small:mini: {train: {epochs: 3}}
  deit_small:distilled: {arch: deit_small_distilled_patch16_224, checkpoint: /ckpt/deit_s_d.pth}
  swin_tiny: {arch: "timm:swin_tiny_patch4_window7_224", checkpoint: /ckpt/swin_t.pth, num_classes: 10}
"""


def test_the_issue_example_reads_and_resolves_every_step(tmp_path):
    zoo = _load(tmp_path, USER_ZOO)
    name, plan = zoo.resolve("deit_small:prune0.7:int8")
    assert name == "deit_small_patch16_224:prune0.7:int8"   # rebased on the registered arch
    assert plan == ZooPlan((ModelSource("deit_small_patch16_224", f"{tmp_path}/ckpt/deit_s.pth"),
                            ModelSource(checkpoint=f"{tmp_path}/ckpt/dynamicvit_deit_s_0.7.pth"), ModelSource()),
                           data="/data/imagenet")
    assert hash(plan) == hash(zoo.resolve("deit_small:prune0.7:int8")[1])   # load_model caches by it
    assert zoo.resolve("deit_small:mini")[1].step(1) == ModelSource(train_epochs=3)
    assert zoo.resolve("deit_small:distilled")[1].step(1).arch == "deit_small_distilled_patch16_224"
    name, plan = zoo.resolve("swin_tiny:int8")
    assert name == "swin_tiny:int8"      # a timm: arch keeps the spec's name; the plan carries it
    assert plan.step(0) == ModelSource("timm:swin_tiny_patch4_window7_224", f"{tmp_path}/ckpt/swin_t.pth", 10)


def test_a_seed_replica_follows_the_entries_of_the_name_it_replicates(tmp_path):
    zoo = _load(tmp_path, USER_ZOO)
    name, plan = zoo.resolve("deit_small@s2:mini")
    assert name == "deit_small_patch16_224@s2:mini" and name.seed == 2
    assert plan.step(0).checkpoint == f"{tmp_path}/ckpt/deit_s.pth" and plan.step(1) == ModelSource(train_epochs=3)


def test_names_without_entries_resolve_to_themselves(tmp_path):
    zoo = _load(tmp_path, USER_ZOO)
    assert zoo.resolve("deit_tiny:int8") == ("deit_tiny:int8", None)
    assert ZooConfig().resolve("deit_tiny") == ("deit_tiny", None)


def test_a_variant_entry_alone_keeps_the_registered_base(tmp_path):
    zoo = _load(tmp_path, "models:\n  deit_tiny_patch16_224:prune0.7: {checkpoint: /c.pth}\n")
    name, plan = zoo.resolve("deit_tiny_patch16_224:prune0.7")
    assert name == "deit_tiny_patch16_224:prune0.7"
    assert plan.step(0).arch == "deit_tiny_patch16_224" and plan.step(1).checkpoint == f"{tmp_path}/c.pth"


@pytest.mark.parametrize("entry, message", [
    ("{arch: deit_tiny, weights: x.pth}", r"models\.a: unknown key 'weights' \(known: arch, checkpoint, num_classes, train\)"),
    ("{num_classes: 0}", r"models\.a\.num_classes: must be a positive integer"),
    ("{num_classes: ten}", r"models\.a\.num_classes: must be a positive integer"),
    ("{checkpoint: 3}", r"models\.a\.checkpoint: must be a non-empty string"),
    ("{train: {epochs: 2}}", r"models\.a\.train: only a compressed variant"),
    ("[1, 2]", r"models\.a: must be a mapping"),
    ("{arch: 'x y'}", r"models\.a\.arch: 'x y' is neither a registered model name nor timm:<name>"),
])
def test_bad_base_entries_are_one_line_errors_naming_file_and_key(tmp_path, entry, message):
    with pytest.raises(ZooConfigError, match=message) as info:
        _load(tmp_path, f"models:\n  a: {entry}\n")
    assert str(info.value).startswith(str(tmp_path / "zoo.yaml")) and "\n" not in str(info.value)
    assert isinstance(info.value, VitrobustError)


@pytest.mark.parametrize("entry, message", [
    ("{train: {epochs: 0}}", r"train\.epochs: must be a positive integer"),
    ("{train: {epochs: 2, lr: 1}}", r"train: unknown key 'lr' \(known: epochs\)"),
    ("{train: 3}", r"train: must be a mapping like"),
    ("{train: {epochs: 2}, checkpoint: c.pth}", "give checkpoint or train, not both"),
    ("{arch: deit_tiny_patch16_224}", r"arch: on a suffixed name is only for :distilled"),
])
def test_bad_variant_entries_are_one_line_errors(tmp_path, entry, message):
    with pytest.raises(ZooConfigError, match=rf"models\.a:prune0\.7.*{message}"):
        _load(tmp_path, f"models:\n  a:prune0.7: {entry}\n")


def test_a_bad_model_name_key_is_an_error(tmp_path):
    with pytest.raises(ZooConfigError, match=r"models\.a::b: bad model name"):
        _load(tmp_path, "models:\n  'a::b': {arch: deit_tiny}\n")


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ZooConfigError, match=r"zoo\.yaml: unknown key 'model'"):
        _load(tmp_path, "model: {}\n")
