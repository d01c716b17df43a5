"""``:mini`` (MiniViT weight multiplexing): shared storage, size, outputs, checkpoints."""
import pytest
import torch

from vitrobust.compress import CompressionError
from vitrobust.compress.multiplex import MultiplexError, layer_weights, multiplex
from vitrobust.metrics import param_count
from vitrobust.zoo import CheckpointError, load_checkpoint, load_model


@pytest.fixture(scope="module")
def mini_model():
    return load_model("vit_fixture:mini", progress=False)


def test_pairs_of_layers_share_one_tensor(mini_model):
    layers = layer_weights(mini_model.net)
    assert len(layers) == 4
    for name in ("qkv", "proj", "fc1", "fc2"):
        ptrs = [layer[name].data_ptr() for layer in layers]
        assert ptrs[0] == ptrs[1] and ptrs[2] == ptrs[3], name
        assert ptrs[1] != ptrs[2], name
        assert layers[0][name] is layers[1][name]
    # ... while LayerNorms and head-mixing maps stay per layer
    for name in ("norm1", "conv_l"):
        assert len({layer[name].data_ptr() for layer in layers}) == 4, name
    # the shared weights are stored once: one qkv key per pair, not per layer
    state = mini_model.net.state_dict()
    assert sum(k.endswith("attn.qkv.weight") for k in state) == 2


def test_params_about_half_and_meta(mini_model, vit_model):
    ratio = param_count(mini_model.net) / param_count(vit_model.net)
    assert 0.4 < ratio < 0.65, ratio
    assert mini_model.info.meta.items() >= {"compression": "mini", "sharing": "pairs of consecutive blocks",
                                    "shared_blocks": 2, "teacher": "vit_fixture"}.items()


def test_output_shape_and_accuracy(mini_model, digits_test):
    with torch.no_grad():
        out = mini_model(digits_test.images[:5])
    assert out.shape == (5, 10)
    acc = (mini_model.predict(digits_test.images) == digits_test.labels).float().mean()
    assert acc > 0.5, f"distilled MiniViT reaches only {acc:.2f}"


def test_unshared_multiplex_reproduces_the_base(vit_model, digits_test):
    # repeats=1 runs the same computation with our attention code: it must equal timm's.
    x = (digits_test.images[:8] - 0.5) / 0.5
    with torch.no_grad():
        assert torch.allclose(multiplex(vit_model.net, 1).eval()(x), vit_model.net(x), atol=1e-4)


def test_full_size_builds_with_random_weights():
    model = load_model("deit_tiny_patch16_224:mini", progress=False, random_weights=True)
    assert len(model.net.blocks) == 6
    assert param_count(model.net) < 0.6 * param_count(load_model("deit_tiny_patch16_224").net)


def test_non_vit_is_a_compression_error():
    with pytest.raises(MultiplexError, match="not a plain ViT") as info:
        multiplex(torch.nn.Linear(3, 3))
    assert isinstance(info.value, CompressionError)


def test_bad_checkpoints_are_clear_errors(mini_model, tmp_path):
    state = {k: v.clone() for k, v in mini_model.net.state_dict().items()}
    good = tmp_path / "good.pt"
    torch.save(state, good)
    load_checkpoint(mini_model.net, good)   # round trip works

    wrong = dict(state)
    wrong["blocks.0.block.attn.qkv.weight"] = torch.zeros(3, 3)
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="shape mismatch for blocks.0.block.attn.qkv.weight"):
        load_checkpoint(mini_model.net, tmp_path / "wrong.pt")

    # a dense (unshared) checkpoint has per-layer keys the multiplexed net does not know
    dense = load_model("vit_fixture").net.state_dict()
    torch.save(dense, tmp_path / "dense.pt")
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_checkpoint(mini_model.net, tmp_path / "dense.pt")
