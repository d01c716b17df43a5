"""``:distilled`` (DeiT distillation token) and ``:bornagain`` (born-again KD)."""
import pytest
import torch

from vitrobust.compress import CompressionError
from vitrobust.compress.distill import DistillError, TEACHERS, distilled_net, teacher_name
from vitrobust.zoo import ModelInfo, ModelWrapper, load_model


@pytest.fixture(scope="module")
def distilled():
    return load_model("vit_fixture:distilled", progress=False)


@pytest.fixture(scope="module")
def bornagain():
    return load_model("vit_fixture:bornagain", progress=False)


def _acc(model, data):
    return (model.predict(data.images) == data.labels).float().mean().item()


def test_distilled_wrapper_returns_one_tensor(distilled, digits_test):
    x = digits_test.images[:6]
    with torch.no_grad():
        out = distilled(x)
        assert isinstance(out, torch.Tensor) and out.shape == (6, 10)
        # ... also while the net is in distilled training mode, where timm returns both heads
        distilled.net.set_distilled_training(True)
        distilled.train()
        try:
            heads = distilled.net(distilled.normalize(x))
            merged = distilled(x)
        finally:
            distilled.net.set_distilled_training(False)
            distilled.eval()
    assert isinstance(heads, tuple) and len(heads) == 2
    assert merged.shape == (6, 10) and torch.allclose(merged, (heads[0] + heads[1]) / 2)


def test_distilled_architecture_meta_and_accuracy(distilled, vit_model, digits_test):
    from timm.models.deit import VisionTransformerDistilled
    assert isinstance(distilled.net, VisionTransformerDistilled)
    assert distilled.net.embed_dim == vit_model.net.embed_dim
    assert len(distilled.net.blocks) == len(vit_model.net.blocks)
    meta = distilled.info.meta
    assert {k: meta[k] for k in ("compression", "teacher", "distillation")} == \
        {"compression": "distilled", "teacher": "cnn_fixture", "distillation": "hard"}
    assert set(meta) == {"compression", "teacher", "distillation", "val_acc", "base_val_acc"}   # scored when built
    assert distilled.info.differentiable
    assert _acc(distilled, digits_test) > 0.6


def test_distilled_starts_from_the_base(vit_model, digits_test):
    # Before training, with both tokens equal, the distilled net computes the base's function
    # up to the extra token in attention: the heads must already agree with the base mostly.
    net = distilled_net(vit_model).eval()
    assert torch.equal(net.blocks[0].attn.qkv.weight, vit_model.net.blocks[0].attn.qkv.weight)
    assert torch.equal(net.head_dist.weight, vit_model.net.head.weight)
    with torch.no_grad():
        pred = net((digits_test.images - 0.5) / 0.5).argmax(1)
    assert (pred == vit_model.predict(digits_test.images)).float().mean() > 0.8


def test_teacher_lookup():
    assert TEACHERS["vit_fixture"] == "cnn_fixture"
    assert teacher_name(load_model("deit_tiny_patch16_224", progress=False)) == "cnn_small"
    # a compressed base is looked up by its registered base name
    assert teacher_name(ModelWrapper(torch.nn.Identity(), ModelInfo("vit_fixture:prune0.7"))) == "cnn_fixture"
    recipe = {"teacher": "deit_small"}
    assert teacher_name(ModelWrapper(torch.nn.Identity(), ModelInfo("vit_fixture", recipe=recipe))) == "deit_small"


def test_non_vit_base_is_a_compression_error(cnn_model):
    with pytest.raises(DistillError, match="cnn_fixture: a distillation token needs a class-token timm ViT") as info:
        distilled_net(cnn_model)
    assert isinstance(info.value, CompressionError)


def test_full_size_distilled_builds_without_training():
    model = load_model("deit_tiny_patch16_224:distilled", progress=False, random_weights=True)
    assert type(model.net).__name__ == "VisionTransformerDistilled"
    with torch.no_grad():
        assert model(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


def test_bornagain_same_architecture_retrained(bornagain, vit_model, digits_test):
    assert type(bornagain.net) is type(vit_model.net)
    assert bornagain.net.state_dict().keys() == vit_model.net.state_dict().keys()
    assert bornagain.info.meta.items() >= {"compression": "bornagain", "teacher": "vit_fixture", "temperature": 4.0}.items()
    assert bornagain.info.weight_hash != vit_model.info.weight_hash
    # retrained on soft labels from the base's weights (2 fixture epochs): still close to the base
    assert _acc(bornagain, digits_test) > _acc(vit_model, digits_test) - 0.1


def test_bornagain_from_scratch_reinitializes(vit_model):
    from vitrobust.compress.distill import reinitialized
    fresh = reinitialized(vit_model.net, seed=1)
    assert not torch.equal(fresh.blocks[0].attn.qkv.weight, vit_model.net.blocks[0].attn.qkv.weight)
    assert torch.equal(reinitialized(vit_model.net, seed=1).blocks[0].attn.qkv.weight, fresh.blocks[0].attn.qkv.weight)
