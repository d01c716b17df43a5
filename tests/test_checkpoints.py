"""The user's own (compressed) checkpoints through the zoo config, end to end via load_model.

Official release layouts are written out here key by key from the releases' model code
(raoyongming/DynamicViT ``PredictorLG``; microsoft/Cream ``mini_vision_transformer.py``;
facebookresearch/deit = timm's ``deit_*_distilled``), with random values, so a drift of our
parameter names from theirs fails here.
"""
import pytest
import timm
import torch

from vitrobust.compress.multiplex import MultiplexError
from vitrobust.compress.prune import PruneError
from vitrobust.zoo import (RANDOM_WEIGHTS, CheckpointError, ClassCountError, UntrainedVariantError,
                           check_class_count, load_model)
from vitrobust.zoo import build
from vitrobust.zoo.build import UnusedSourceError
from vitrobust.zoo.config import ZooConfig
from vitrobust.zoo.variant import _train_cached as _real_train_cached


@pytest.fixture(autouse=True)
def fresh_models(monkeypatch):
    monkeypatch.setattr(build, "_LOADED", {})


def _random_state(shapes: dict) -> dict:
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen) * 0.02 for k, shape in shapes.items()}
    for k in state:   # batch-norm statistics as a trained model has them
        if k.endswith("running_var"):
            state[k] = torch.ones(shapes[k])
        elif k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(0)
    return state


def _shapes(arch: str, **kwargs) -> dict:
    with torch.device("meta"):   # shapes only: skip timm's (slow) weight init
        net = timm.create_model(arch, pretrained=False, **kwargs)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _load(zoo: ZooConfig, name: str, **kwargs):
    arch, plan = zoo.resolve(name)
    return load_model(arch, checkpoint=plan, progress=False, **kwargs)


def _no_training(monkeypatch):
    from vitrobust.zoo import train, variant

    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("trained instead of loading"))
    monkeypatch.setattr(variant, "_train_cached", lambda *a, **k: pytest.fail("trained instead of loading"))


@pytest.fixture(scope="module")
def tiny10(tmp_path_factory):
    """A 10-class deit_tiny_patch16_224 checkpoint, as a user's fine-tuned model is saved."""
    path = tmp_path_factory.mktemp("ckpt") / "deit_tiny_10.pth"
    torch.save({"model": _random_state(_shapes("deit_tiny_patch16_224", num_classes=10))}, path)
    return str(path)


def test_a_10_class_checkpoint_builds_a_10_class_model(tiny10):
    zoo = ZooConfig(models={"deit_tiny": {"arch": "deit_tiny_patch16_224", "checkpoint": tiny10}})
    model = _load(zoo, "deit_tiny")
    assert model.info.num_classes == 10 and model.net.head.out_features == 10
    assert torch.equal(model.net.head.weight, torch.load(tiny10)["model"]["head.weight"])
    assert model.info.meta["weights"] == f"checkpoint {tiny10}" and model.info.data is None
    with torch.no_grad():
        assert model(torch.rand(2, 3, 224, 224)).shape == (2, 10)
    check_class_count(model, 10)
    with pytest.raises(ClassCountError, match=r"'deit_tiny_patch16_224' has 10 classes but /data/val has 1000"):
        check_class_count(model, 1000, "/data/val")


def test_num_classes_key_sizes_a_random_model_and_it_is_labelled():
    zoo = ZooConfig(models={"t": {"arch": "deit_tiny_patch16_224", "num_classes": 7}})
    model = _load(zoo, "t")
    assert model.info.num_classes == 7 and model.info.meta["weights"] == RANDOM_WEIGHTS
    assert load_model("deit_tiny_patch16_224:int8", progress=False).info.meta["weights"] == RANDOM_WEIGHTS


@pytest.mark.parametrize("suffix", ["prune0.7", "mini", "distilled", "bornagain", "advtrain"])
def test_an_untrained_variant_of_a_checkpoint_base_is_refused(tiny10, suffix):
    zoo = ZooConfig(models={"deit_tiny": {"arch": "deit_tiny_patch16_224", "checkpoint": tiny10}})
    with pytest.raises(UntrainedVariantError) as info:
        _load(zoo, f"deit_tiny:{suffix}")
    text = str(info.value)
    assert text.startswith(f"deit_tiny:{suffix}: this variant needs training") and "\n" not in text   # the zoo key
    assert "{checkpoint: PATH}" in text and "train: {epochs: N}" in text


def test_random_weights_is_an_explicit_choice_and_labelled():
    with pytest.raises(UntrainedVariantError):
        load_model("deit_tiny_patch16_224:bornagain", progress=False)
    model = load_model("deit_tiny_patch16_224:bornagain", progress=False, random_weights=True)
    assert model.info.meta["weights"] == RANDOM_WEIGHTS


def test_a_checkpoint_on_an_untrained_step_is_not_ignored(tiny10):
    zoo = ZooConfig(models={"deit_tiny_patch16_224:int8": {"checkpoint": tiny10}})
    with pytest.raises(UnusedSourceError, match=r"deit_tiny_patch16_224:int8: :int8 is built from its parent"):
        _load(zoo, "deit_tiny_patch16_224:int8")


def _predictor_lg(i: int, dim: int) -> dict:
    """DynamicViT's PredictorLG: in_conv = (LayerNorm, Linear, GELU), out_conv = (Linear, GELU,
    Linear, GELU, Linear, LogSoftmax)."""
    p = f"score_predictor.{i}."
    return {p + "in_conv.0.weight": (dim,), p + "in_conv.0.bias": (dim,),
            p + "in_conv.1.weight": (dim, dim), p + "in_conv.1.bias": (dim,),
            p + "out_conv.0.weight": (dim // 2, dim), p + "out_conv.0.bias": (dim // 2,),
            p + "out_conv.2.weight": (dim // 4, dim // 2), p + "out_conv.2.bias": (dim // 4,),
            p + "out_conv.4.weight": (2, dim // 4), p + "out_conv.4.bias": (2,)}


# The release has DeiT-S at 0.7, 0.6 and 0.5: one layout, so two rates cover it.
# Kept tokens as the release counts them: int(rho**k * 196) (0.7: 137.2, 96.04, 67.2).
@pytest.mark.parametrize("rho, kept", [(0.7, [137, 96, 67]), (0.5, [98, 49, 24])])
def test_official_dynamicvit_deit_s_checkpoint_loads_instead_of_training(tmp_path, monkeypatch, rho, kept):
    shapes = _shapes("deit_small_patch16_224")
    for i in range(3):
        shapes.update(_predictor_lg(i, 384))
    state = _random_state(shapes)
    path = tmp_path / f"dynamicvit_deit_s_{rho}.pth"
    torch.save({"model": state}, path)   # the release's layout: the state dict under "model"
    _no_training(monkeypatch)
    zoo = ZooConfig(models={"deit_small": {"arch": "deit_small_patch16_224"},
                            f"deit_small:prune{rho}": {"checkpoint": str(path)}})
    model = _load(zoo, f"deit_small:prune{rho}")
    own = model.net.state_dict()
    assert own.keys() == state.keys() and all(torch.equal(own[k], state[k]) for k in state)
    assert model.info.meta["weights"] == f"checkpoint {path}" and model.info.num_classes == 1000
    assert model.info.meta["tokens_kept"] == kept
    from vitrobust.in_effect import token_keep_ratios
    assert token_keep_ratios(model, torch.rand(1, 3, 224, 224)) == pytest.approx([k / 196 for k in kept])


def _mini_deit(dim: int, depth: int, heads: int, classes: int, irpe: bool) -> dict:
    """Mini-DeiT's keys (use_cls_token=False: pos_embed over the patches only, mean pooling)."""
    shapes = {"patch_embed.proj.weight": (dim, 3, 16, 16), "patch_embed.proj.bias": (dim,),
              "pos_embed": (1, 196, dim), "norm.weight": (dim,), "norm.bias": (dim,),
              "head.weight": (classes, dim), "head.bias": (classes,)}
    for g in range(depth // 2):
        p = f"blocks.{g}.block."
        shapes.update({p + "attn.qkv.weight": (3 * dim, dim), p + "attn.qkv.bias": (3 * dim,),
                       p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
                       p + "mlp.fc1.weight": (4 * dim, dim), p + "mlp.fc1.bias": (4 * dim,),
                       p + "mlp.fc2.weight": (dim, 4 * dim), p + "mlp.fc2.bias": (dim,)})
        for r in range(2):
            for norm in ("norm1", "norm2"):
                shapes.update({p + f"{norm}.instances.{r}.weight": (dim,), p + f"{norm}.instances.{r}.bias": (dim,)})
            for conv in ("conv_l", "conv_w"):
                shapes[p + f"attn.{conv}.instances.{r}.weight"] = (heads, heads, 1, 1)
            if irpe:
                shapes[p + f"attn.rpe_k.instances.{r}.lookup_table_weight"] = (1, dim // heads, 49)
    return shapes


def test_official_mini_deit_checkpoint_loads_with_its_pooling(tmp_path, monkeypatch):
    state = _random_state(_mini_deit(192, 12, 3, 10, irpe=False))
    path = tmp_path / "mini_deit_tiny.pth"
    torch.save({"model": state}, path)
    _no_training(monkeypatch)
    zoo = ZooConfig(models={"deit_tiny_patch16_224:mini": {"checkpoint": str(path)}})
    model = _load(zoo, "deit_tiny_patch16_224:mini")
    net = model.net
    own = net.state_dict()
    assert own.keys() == state.keys() and all(torch.equal(own[k], state[k]) for k in state)
    assert net.cls_token is None and model.info.num_classes == 10   # classes from the variant's head
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        tokens = net.patch_embed(model.normalize(x)).reshape(2, 196, 192) + net.pos_embed
        expected = net.head(net.norm(net.blocks(tokens)).mean(1))   # no class token: mean of patches
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_official_mini_deit_with_irpe_loads_and_uses_it(tmp_path, monkeypatch):
    state = _random_state(_mini_deit(192, 12, 3, 1000, irpe=True))
    for key in state:   # tables big enough to move the logits measurably
        if key.endswith("lookup_table_weight"):
            state[key] = state[key] * 500
    path = tmp_path / "mini_deit_tiny_irpe.pth"
    torch.save({"model": state}, path)
    _no_training(monkeypatch)
    zoo = ZooConfig(models={"deit_tiny_patch16_224:mini": {"checkpoint": str(path)}})
    model = _load(zoo, "deit_tiny_patch16_224:mini")
    own = model.net.state_dict()
    assert own.keys() == state.keys() and all(torch.equal(own[k], state[k]) for k in state)
    x = torch.rand(1, 3, 224, 224)
    attn = model.net.blocks[-1].block.attn
    attn.keep_attn = True   # the last layer's attention distribution, after conv_l and the softmax
    with torch.no_grad():
        model(x)
        with_rpe = attn.last_attn
        for group in model.net.blocks:
            for rpe in group.block.attn.rpe_k.instances:
                rpe.lookup_table_weight.zero_()
        model(x)
    attn.keep_attn = False
    assert not torch.allclose(with_rpe, attn.last_attn, rtol=1e-3, atol=1e-6)   # the encoding is used


def test_irpe_buckets_follow_the_piecewise_index():
    from vitrobust.compress.irpe import KeyRPE, bucket_ids, piecewise_index

    offsets = torch.tensor([-13, -4, -3, -2, -1, 0, 1, 2, 3, 4, 13])
    assert piecewise_index(offsets, 1.9, 3.8, 15.2).tolist() == [-3, -3, -2, -2, -1, 0, 1, 2, 2, 3, 3]
    ids = bucket_ids(14, 14, 1.9)
    assert ids.shape == (196, 196) and int(ids.max()) == 48 and int(ids.min()) == 0
    assert ids[0, 0] == 24 and ids[0, 1] == 23 and ids[195, 0] == 48 and ids[0, 195] == 0
    rpe = KeyRPE(4)
    torch.nn.init.normal_(rpe.lookup_table_weight)
    q = torch.randn(1, 2, 196, 4)
    out = rpe(q)
    for i, j in [(0, 0), (5, 100), (195, 3)]:
        assert torch.allclose(out[0, 1, i, j], q[0, 1, i] @ rpe.lookup_table_weight[0, :, ids[i, j]])


def test_an_other_irpe_layout_is_refused_in_one_line(tmp_path):
    shapes = _mini_deit(192, 12, 3, 1000, irpe=True)
    shapes["blocks.0.block.attn.rpe_q.instances.0.lookup_table_weight"] = (1, 64, 49)
    path = tmp_path / "mini_irpe_q.pth"
    torch.save({"model": _random_state(shapes)}, path)
    zoo = ZooConfig(models={"deit_tiny_patch16_224:mini": {"checkpoint": str(path)}})
    with pytest.raises(CheckpointError, match=r"mini_irpe_q.pth: iRPE layout other than the Mini-DeiT release's "
                                              r".*blocks.0.block.attn.rpe_q.instances.0"):
        _load(zoo, "deit_tiny_patch16_224:mini")


def test_official_distilled_deit_checkpoint_loads(tmp_path, monkeypatch):
    state = _random_state(_shapes("deit_tiny_distilled_patch16_224"))
    assert {"dist_token", "head_dist.weight"} <= state.keys() and state["pos_embed"].shape[1] == 198
    path = tmp_path / "deit_tiny_distilled.pth"
    torch.save({"model": state}, path)
    _no_training(monkeypatch)
    zoo = ZooConfig(models={"deit_tiny": {"arch": "deit_tiny_patch16_224"},
                            "deit_tiny:distilled": {"arch": "deit_tiny_distilled_patch16_224", "checkpoint": str(path)}})
    model = _load(zoo, "deit_tiny:distilled")
    assert torch.equal(model.net.head_dist.weight, state["head_dist.weight"])
    with torch.no_grad():
        assert model(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


def test_any_timm_architecture_int8_applies_prune_and_mini_refuse(tmp_path):
    path = tmp_path / "resnet10t.pth"
    torch.save(_random_state(_shapes("resnet10t", num_classes=10)), path)
    zoo = ZooConfig(models={"r": {"arch": "timm:resnet10t", "checkpoint": str(path)}})
    base = _load(zoo, "r")
    assert base.name == "r" and base.info.num_classes == 10 and base.info.family == "timm"
    int8 = _load(zoo, "r:int8")
    with torch.no_grad():
        assert int8(torch.rand(1, 3, 224, 224)).shape == (1, 10)
    with pytest.raises(PruneError, match="token pruning needs a timm VisionTransformer, got ResNet"):
        _load(zoo, "r:prune0.7")
    with pytest.raises(MultiplexError, match="ResNet is not a plain ViT"):
        _load(zoo, "r:mini")
    with pytest.raises(UntrainedVariantError, match="r:advtrain: this variant needs training"):
        _load(zoo, "r:advtrain")   # applies (it is not refused as a non-ViT); it needs weights


def test_train_fine_tunes_a_variant_once_and_caches_it(tmp_path, monkeypatch, vit_model):
    monkeypatch.setenv("VITROBUST_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "vit.pth"
    torch.save(vit_model.net.state_dict(), path)
    zoo = ZooConfig(models={"v": {"arch": "vit_fixture", "checkpoint": str(path)},
                            "v:bornagain": {"train": {"epochs": 1}}}, data="digits")
    tuned = _load(zoo, "v:bornagain")
    assert tuned.info.meta["weights"] == "fine-tuned 1 epochs on digits"
    assert tuned.info.weight_hash != vit_model.info.weight_hash
    build._LOADED.clear()
    _no_training(monkeypatch)
    monkeypatch.setattr("vitrobust.zoo.variant._train_cached", _real_train_cached)
    monkeypatch.setattr("vitrobust.compress.distill.fit", lambda *a, **k: pytest.fail("not cached"))
    assert _load(zoo, "v:bornagain").info.weight_hash == tuned.info.weight_hash


def test_an_unknown_timm_architecture_is_a_one_line_error():
    from vitrobust.zoo.timm_arch import ArchError

    with pytest.raises(ArchError, match=r"arch 'timm:not_a_model': timm has no architecture 'not_a_model'"):
        _load(ZooConfig(models={"x": {"arch": "timm:not_a_model"}}), "x:int8")
