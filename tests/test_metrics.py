"""Measurements against quantities known by hand: rates, MACs of known shapes, bytes of known
state dicts, parameters of shared and quantized layers, images per second of a known delay."""
import io
import math
import time

import pytest
import torch
from hypothesis import given, strategies as st
from timm.layers import Attention
from torch import nn

from vitrobust import metrics
from vitrobust.compress import int8_exact
from vitrobust.compress.quantize import quantize_net
from vitrobust.zoo import ModelInfo, ModelWrapper, load_model


def _wrap(net, input_size=8, num_classes=10):
    return ModelWrapper(net, ModelInfo("known", input_size=input_size, num_classes=num_classes)).eval()


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


# -- GFLOPs: multiply-accumulates per image ------------------------------------------------------
def test_gflops_of_a_linear_layer_is_in_times_out():
    model = _wrap(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)))
    assert metrics.gflops(model) == pytest.approx(3 * 8 * 8 * 10 / 1e9)
    # INT8 changes the number format, not the count (the quantized linear is counted by a hook)
    assert metrics.gflops(_wrap(quantize_net(model.net))) == pytest.approx(metrics.gflops(model))


@pytest.mark.parametrize("int8_gemm", [True, False])
def test_gflops_of_exact_int8_is_the_fp32_count_whichever_product_runs(int8_gemm):
    # the exact linears' product is a GEMM the counter sees (float32) or not (_int_mm): counted
    # once either way, and the layers compute as before once counted
    model = _wrap(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10), nn.ReLU(), nn.Linear(10, 4)))
    exact = _wrap(int8_exact.exact_int8(quantize_net(model.net)))
    with int8_exact.forced_product(int8_gemm):
        assert metrics.gflops(exact) == pytest.approx(metrics.gflops(model))
    assert all(type(m).forward is m.forward.__func__ for m in exact.net.modules()
               if isinstance(m, int8_exact.ExactDynamicLinear))


class _TokenAttention(nn.Module):
    """Pixels as tokens (N = H*W, 3 channels) -> a linear embedding -> one timm attention."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.embed = nn.Linear(3, dim)
        self.attn = Attention(dim, num_heads=heads, qkv_bias=True)

    def forward(self, x):
        return self.attn(self.embed(x.flatten(2).transpose(1, 2))).mean(1)


def test_gflops_of_attention_is_the_hand_count_even_when_fused():
    model = _wrap(_TokenAttention(dim=8, heads=2), input_size=4, num_classes=8)
    assert model.net.attn.fused_attn   # timm's fused SDPA, invisible to the counter on CPU
    n, d = 4 * 4, 8
    macs = (n * 3 * d          # embedding
            + n * d * 3 * d    # qkv
            + n * n * d        # q @ k^T over the heads (2 heads x n x n x d/2)
            + n * n * d        # attn @ v
            + n * d * d)       # proj
    assert metrics.gflops(model) == pytest.approx(macs / 1e9)
    assert model.net.attn.fused_attn   # switched back after counting


def test_gflops_match_the_literature_for_deit_small():
    model = load_model("deit_small_patch16_224", progress=False)
    assert metrics.gflops(model) == pytest.approx(4.6, abs=0.05)   # DeiT paper: 4.6 GFLOPs
    assert metrics.param_count(model) == 22_050_664


# -- size: bytes of the serialized state dict ----------------------------------------------------
class _Buffer(nn.Module):
    def __init__(self, dtype, n=1_000_000):
        super().__init__()
        self.register_buffer("w", torch.zeros(n, dtype=dtype))


def test_size_is_the_bytes_of_the_state_dict():
    fp32, int8 = metrics.size_mb(_Buffer(torch.float32)), metrics.size_mb(_Buffer(torch.int8))
    assert 4.0 < fp32 < 4.0 + 0.01          # 1e6 float32 values + a little pickle framing
    assert 1.0 < int8 < 1.0 + 0.01
    buffer = io.BytesIO()
    torch.save(_Buffer(torch.float32).state_dict(), buffer)
    assert fp32 == buffer.getbuffer().nbytes / 1e6


def test_size_leaves_out_the_wrappers_normalization(vit_model):
    assert metrics.size_mb(vit_model) == metrics.size_mb(vit_model.net)
    assert metrics.size_mb(vit_model) < metrics.size_mb(nn.ModuleDict({"w": vit_model}))


# -- parameters ------------------------------------------------------------------------------------
def test_shared_parameters_counted_once():
    layer = nn.Linear(4, 4)
    assert metrics.param_count(nn.Sequential(layer, layer)) == 20
    # two Parameter objects over one storage (weights tied by hand) are one tensor as well
    tied = nn.Linear(4, 4, bias=False)
    tied.weight = nn.Parameter(layer.weight.data)
    model = nn.Sequential(layer, tied)
    assert sum(p.numel() for p in model.parameters()) == 36
    assert metrics.param_count(model) == 20


def test_quantized_linear_weights_are_counted():
    assert metrics.param_count(quantize_net(nn.Sequential(nn.Linear(4, 3)))) == 4 * 3 + 3


# -- throughput: images per second --------------------------------------------------------------
class _Sleepy(nn.Module):
    """Costs ``delay`` seconds per call and (almost) nothing per image."""

    def __init__(self, delay):
        super().__init__()
        self.delay = delay

    def forward(self, x):
        time.sleep(self.delay)
        return x.flatten(1)[:, :10]


def test_throughput_of_a_known_delay():
    delay = 0.03
    model = _wrap(_Sleepy(delay))
    speed = metrics.throughput(model, batch_size=16, warmup=1, repeats=5)
    assert 16 / (1.5 * delay) < speed <= 16 / delay      # the sleep bounds it; overhead is small
    # the default batch for 8x8 inputs is 64 images per call
    assert metrics.default_batch_size(8) == 64
    assert 64 / (1.5 * delay) < metrics.throughput(model, warmup=1, repeats=5) <= 64 / delay


def test_throughput_falls_in_proportion_to_the_delay():
    fast = metrics.throughput(_wrap(_Sleepy(0.03)), batch_size=16, warmup=1, repeats=5)
    slow = metrics.throughput(_wrap(_Sleepy(0.06)), batch_size=16, warmup=1, repeats=5)
    assert 1.5 < fast / slow < 2.5


def test_side_by_side_throughput_ranks_a_slowed_copy_below_the_original(vit_model):
    import copy

    slowed = copy.deepcopy(vit_model)
    forward = slowed.net.forward
    slowed.net.forward = lambda x: (time.sleep(0.02), forward(x))[1]   # +20 ms per batch
    fast, slow = metrics.throughput_side_by_side([vit_model, slowed], rounds=2)
    assert fast > slow > 0
    assert slow < 64 / 0.02          # the sleep alone caps it


def test_throughput_synchronizes_the_device_before_each_clock_reading(vit_model, monkeypatch):
    from vitrobust import metrics

    calls = []
    monkeypatch.setattr(metrics, "synchronize", lambda device: calls.append(str(device)))
    metrics.throughput(vit_model, batch_size=2, warmup=1, repeats=3)
    assert calls == ["cpu"] * 6                # before the start and before the stop of each repeat


def test_synchronize_waits_for_cuda_only(monkeypatch):
    import torch

    from vitrobust.device import synchronize

    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(str(device)))
    synchronize("cpu")
    synchronize("cuda:1")
    assert waited == ["cuda:1"]


def test_side_by_side_warms_each_model_up_in_its_first_round_only(monkeypatch):
    calls = []
    monkeypatch.setattr(metrics, "throughput", lambda model, batch_size=None, warmup=2, repeats=5: calls.append((model, warmup, repeats)) or 1.0)
    metrics.throughput_side_by_side(["a", "b"], rounds=3)
    assert calls == [("a", 2, 5), ("b", 2, 5), ("a", 0, 5), ("b", 0, 5), ("a", 0, 5), ("b", 0, 5)]
