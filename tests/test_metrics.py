import io
import math

import pytest
import torch
from hypothesis import given, strategies as st

from vitrobust import metrics
from vitrobust.zoo import load_model


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_asr_counts_only_images_the_target_gets_right(pairs):
    clean = torch.tensor([c for c, _ in pairs])
    adv = torch.tensor([a for _, a in pairs])
    rate = metrics.attack_success(clean, adv)
    assert rate.n == int(clean.sum())
    assert rate.k == int((clean & ~adv).sum())
    assert all(math.isnan(o) for o, c in zip(rate.outcomes.tolist(), clean.tolist()) if not c)
    if rate.n:
        assert 0 <= rate.value <= 1


def test_gflops_match_the_literature_for_deit_small():
    model = load_model("deit_small_patch16_224", progress=False)
    assert metrics.gflops(model) == pytest.approx(4.6, abs=0.05)   # DeiT paper: 4.6 GFLOPs
    assert metrics.param_count(model) == 22_050_664


def test_gflops_count_attention_even_when_fused(vit_model):
    # attention MACs per block at 65 tokens, width 32: 2 * 65 * 65 * 32; 4 blocks
    attention = 4 * 2 * 65 * 65 * 32 / 1e9
    dense = metrics.gflops(vit_model)
    assert dense > attention
    assert all(getattr(m, "fused_attn", True) for m in vit_model.modules() if hasattr(m, "fused_attn"))


def test_size_is_the_serialized_state_dict(vit_model):
    buffer = io.BytesIO()
    torch.save(vit_model.net.state_dict(), buffer)
    assert metrics.size_mb(vit_model) == pytest.approx(buffer.getbuffer().nbytes / 1e6)


def test_shared_parameters_counted_once():
    layer = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(layer, layer)
    assert metrics.param_count(model) == 20


def test_throughput_is_positive(vit_model):
    assert metrics.throughput(vit_model, batch_size=8, warmup=1, repeats=2) > 0


def test_side_by_side_throughput_ranks_a_slowed_copy_below_the_original(vit_model):
    import copy
    import time

    slowed = copy.deepcopy(vit_model)
    forward = slowed.net.forward
    slowed.net.forward = lambda x: (time.sleep(0.02), forward(x))[1]   # +20 ms per batch
    fast, slow = metrics.throughput_side_by_side([vit_model, slowed], rounds=2)
    assert fast > slow > 0
    assert slow < 64 / 0.02          # the sleep alone caps it
