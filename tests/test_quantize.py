"""``:int8``: agreement with FP32, batch invariance, size, and no silent gradients."""
import hashlib
import io
import warnings

import pytest
import torch

from vitrobust.attacks import straight_through
from vitrobust.compress.quantize import Int8GradientError
from vitrobust.zoo import load_model


@pytest.fixture(scope="module")
def int8_model():
    return load_model("vit_fixture:int8", progress=False)


def _serialized_bytes(state: dict) -> int:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def test_int8_agrees_with_fp32_argmax(int8_model, vit_model, digits_test):
    agree = (int8_model.predict(digits_test.images) == vit_model.predict(digits_test.images)).float().mean()
    assert agree >= 0.90, f"INT8 agrees with FP32 on only {agree:.2%} of test images"


def test_int8_really_quantized(int8_model, vit_model, digits_test):
    # A no-op "quantization" would agree perfectly: the logits must move a little.
    x = digits_test.images[:32]
    with torch.no_grad():
        diff = (int8_model(x) - vit_model(x)).abs().max().item()
    assert 0 < diff < 2.0
    assert int8_model.info.differentiable is False
    assert int8_model.info.meta == {"compression": "int8", "bits": 8,
                                    "scheme": "dynamic per-tensor activations, per-tensor weights"}


def test_int8_declares_its_parent_as_gradient_surrogate(vit_model):
    assert load_model("vit_fixture:int8", progress=False).info.surrogate == "vit_fixture"
    stacked = load_model("vit_fixture:prune0.7:int8", progress=False)
    assert stacked.info.surrogate == "vit_fixture:prune0.7"
    assert vit_model.info.surrogate is None
    assert load_model("vit_fixture:prune0.7", progress=False).info.surrogate is None


def test_int8_keeps_the_base_data_size_recipe_and_normalization(int8_model, vit_model):
    for field in ("family", "data", "input_size", "num_classes", "recipe"):
        assert getattr(int8_model.info, field) == getattr(vit_model.info, field), field
    assert int8_model.normalization == vit_model.normalization


def test_int8_logits_do_not_depend_on_batch_mates(int8_model, digits_test):
    x = digits_test.images[:16]
    with torch.no_grad():
        alone = torch.cat([int8_model(x[i:i + 1]) for i in range(len(x))])
        batched = int8_model(x)
        # the same first image beside very different batch-mates (bright noise)
        mixed = int8_model(torch.cat([x[:1], torch.rand(7, *x.shape[1:]) * 3]))[:1]
    assert torch.allclose(alone, batched, atol=1e-5)
    assert torch.allclose(mixed, alone[:1], atol=1e-5)


def test_int8_state_dict_saves_and_is_smaller(int8_model, vit_model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # saving must not need any deprecated path
        int8_bytes = _serialized_bytes(int8_model.net.state_dict())
    fp32_bytes = _serialized_bytes(vit_model.net.state_dict())
    # the fixture is tiny, so FP32 embeddings / LayerNorms weigh more than in DeiT proper
    assert int8_bytes < 0.6 * fp32_bytes, (int8_bytes, fp32_bytes)


def test_backward_through_int8_raises(int8_model, digits_test):
    x = digits_test.images[:4].clone().requires_grad_(True)
    with pytest.raises(Int8GradientError, match="no gradients"):
        int8_model(x).sum().backward()


def test_straight_through_gives_int8_outputs_and_fp32_gradients(int8_model, vit_model, digits_test):
    st = straight_through(int8_model, vit_model)
    assert st.info.differentiable and st.info.meta["strategy"] == "straight-through"
    assert st.info.name == "vit_fixture:int8@st" and st.info.meta["gradient_from"] == "vit_fixture"
    # the hash adversarial sets made through it are cached under: both models' hashes, joined
    joined = f"{int8_model.info.weight_hash}|{vit_model.info.weight_hash}".encode()
    assert st.info.weight_hash == hashlib.sha256(joined).hexdigest()[:16]
    x = digits_test.images[:8]
    xr = x.clone().requires_grad_(True)
    out = st(xr)
    # autograd.grad, not backward: leave no gradients on the shared session fixtures
    (g_st,) = torch.autograd.grad(out.gather(1, digits_test.labels[:8, None]).sum(), xr)
    with torch.no_grad():
        assert torch.allclose(out, int8_model(x), atol=1e-5)
    xf = x.clone().requires_grad_(True)
    (g_fp,) = torch.autograd.grad(vit_model(xf).gather(1, digits_test.labels[:8, None]).sum(), xf)
    assert g_st.abs().sum() > 0
    assert torch.allclose(g_st, g_fp, atol=1e-6)
