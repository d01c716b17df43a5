"""Per-image exact INT8 linears against torch's own kernel called on one image at a time.

The reference everywhere is torch's ``quantize_dynamic`` net run image by image (how ``:int8``
was scored before batching); the batched exact net must reproduce it bit for bit."""
import threading
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vitrobust import metrics
from vitrobust.compress import int8_exact
from vitrobust.compress.int8_exact import ExactDynamicLinear, choose_qparams, exact_int8, fbgemm_kernel, fma32
from vitrobust.compress.quantize import BatchInvariant, Int8GradientError, int8_state_hash, quantize_net

pytestmark = pytest.mark.skipif(not fbgemm_kernel(), reason="the exact path reproduces fbgemm only")


@pytest.fixture(scope="module", autouse=True, params=["int8 gemm", "float gemm"])
def integer_product(request):
    """Every test runs with both exact products, whichever this CPU would pick (module scope:
    hypothesis refuses function-scoped fixtures)."""
    with int8_exact.forced_product(request.param == "int8 gemm"):
        yield request.param


def _per_call(net, x):
    with torch.no_grad():
        return torch.cat([net(image[None]) for image in x])


def _assert_same(got, want):
    assert torch.equal(got, want), f"max |diff| {(got - want).abs().max().item():.3g}, " \
                                   f"{int((got != want).sum())} of {got.numel()} differ"


def _linears(*sizes, bias=True, seed=0):
    """Quantized linears with ReLUs between. (Not GELU: CPU GELU's scalar tail and SIMD body can
    differ in the last bit, so a per-image call whose length is no multiple of the vector width
    differs from the batch already in FP32; the zoo's and the ViT below's lengths are multiples.)"""
    torch.manual_seed(seed)
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(n_in, n_out, bias=bias), nn.ReLU()]
    return quantize_net(nn.Sequential(*layers[:-1]))


def _awkward_batch(images=12, tokens=5, width=48, seed=1):
    """Images whose ranges the kernel treats differently: mixed, all positive, all negative,
    constant, zero, tiny (the minimum scale kicks in), huge, and one spike among small values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(images, tokens, width, generator=g)
    x[1] = x[1].abs() + 0.5
    x[2] = -x[2].abs() - 0.5
    x[3] = 0.7
    x[4] = 0
    x[5] = -3.0
    x[6] *= 1e-7
    x[7] *= 1e4
    x[8] = x[8] * 1e-3
    x[8, 0, 0] = 50.0
    x[9] = x[9] * 4 + 6       # all positive, far from 0
    return x


@pytest.mark.parametrize("bias", [True, False])
def test_random_linear_stack_matches_torch_image_by_image(bias):
    net = _linears(48, 96, 40, 10, bias=bias)
    x = _awkward_batch()
    _assert_same(exact_int8(net)(x), _per_call(net, x))


def test_old_module_versions_use_the_full_uint8_range():
    # modules loaded from version < 4 state dicts call the kernel without reduce_range: 0..255,
    # where xq - zp no longer fits int8 (the shifted product path)
    net = _linears(48, 40, 10)
    for layer in net:
        if hasattr(layer, "version"):
            layer.version = 3
    x = _awkward_batch()
    exact = exact_int8(net)
    assert {layer.version for layer in exact if hasattr(layer, "version")} == {3}
    want = _per_call(net, x)
    assert not torch.equal(want, _per_call(_linears(48, 40, 10), x)), "the version must matter"
    _assert_same(exact(x), want)


def test_two_dimensional_inputs_are_one_row_per_image():
    net = _linears(48, 30, 7)
    x = _awkward_batch()[:, 0]
    _assert_same(exact_int8(net)(x), _per_call(net, x))


def test_per_channel_and_asymmetric_weights():
    # quantize_dynamic's default is per-tensor symmetric; other weight schemes use the zero-point
    # corrections (weight zero points -128 here) and per-channel scales
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver, PlaceholderObserver, QConfig
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(48, 24), nn.ReLU(), nn.Linear(24, 6))
    with torch.no_grad():
        net[0].weight.add_(0.3)
    for observer in (MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_affine),
                     PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_affine)):
        qconfig = QConfig(activation=PlaceholderObserver.with_args(dtype=torch.quint8, is_dynamic=True),
                          weight=observer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = torch.ao.quantization.quantize_dynamic(net, {nn.Linear: qconfig})
        weight = q[0].weight()
        zero_points = weight.q_per_channel_zero_points() if weight.qscheme() == torch.per_channel_affine \
            else torch.tensor(weight.q_zero_point())
        assert zero_points.ne(0).all()
        x = _awkward_batch()
        _assert_same(exact_int8(q)(x), _per_call(q, x))


def test_accumulators_beyond_float32_integers_are_rounded_as_the_kernel():
    # positive inputs and weights over 4096 inputs: |acc| ~ 4e7 > 2**24, where fbgemm's int32 ->
    # float32 conversion rounds
    torch.manual_seed(4)
    linear = nn.Linear(4096, 8)
    with torch.no_grad():
        linear.weight.uniform_(0.5, 1.0)
    net = quantize_net(nn.Sequential(linear))
    x = torch.rand(3, 2, 4096) * 0.5 + 0.5
    want = _per_call(net, x)
    x_scale = torch._choose_qparams_per_tensor(x[0], reduce_range=True)[0]
    acc = (want[0] - linear.bias.detach()) / (x_scale * net[0].weight().q_scale())
    assert acc.abs().max() > 2**24
    _assert_same(exact_int8(net)(x), want)


def test_small_timm_vit_matches_torch_image_by_image():
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=5).eval()
    net = quantize_net(vit)
    x = torch.rand(24, 3, 16, 16) * 2 - 1
    x[3] = 0
    exact = exact_int8(net)
    assert sum(isinstance(m, ExactDynamicLinear) for m in exact.modules()) == 2 * 4 + 1
    _assert_same(exact(x), _per_call(net, x))
    batched = net(x)              # torch's kernel on the whole batch: one scale for all images
    assert not torch.equal(batched, _per_call(net, x)), "the batch must actually mix scales"


def test_result_does_not_depend_on_batch_mates():
    net = exact_int8(_linears(48, 64, 10))
    x = _awkward_batch()
    alone = net(x[:1])
    for mates in (torch.rand(7, 5, 48) * 100, torch.zeros(3, 5, 48), -torch.rand(1, 5, 48)):
        _assert_same(net(torch.cat([x[:1], mates]))[:1], alone)
    _assert_same(net(x.flip(0)).flip(0), net(x))


def test_inputs_in_any_memory_layout():
    net = _linears(48, 64, 10)
    x = _awkward_batch()
    strided = x.transpose(1, 2).contiguous().transpose(1, 2)     # same values, permuted strides
    assert not strided.is_contiguous()
    _assert_same(exact_int8(net)(strided), _per_call(net, x))


def test_empty_batches_give_empty_results_as_torch():
    net = _linears(48, 10)
    for x in (torch.rand(0, 5, 48), torch.rand(3, 0, 48), torch.rand(0, 48)):
        assert exact_int8(net)(x).shape == net(x).shape


def test_dequantizing_fma_is_probed_and_its_emulation_stays_exact(monkeypatch):
    # torch.addcmul is used where it rounds once; the probe catches a multiply-then-add, and the
    # float64 emulation (fma32) takes over, with the same logits
    assert not int8_exact.rounds_once(lambda c, a, b, out: torch.add(c, a * b, out=out))
    assert int8_exact.rounds_once(lambda c, a, b, out: out.copy_(fma32(a, b, c)))
    assert int8_exact.addcmul_is_fma() == int8_exact.rounds_once(torch.addcmul)
    net, x = _linears(48, 96, 10), _awkward_batch()
    want = _per_call(net, x)
    monkeypatch.setattr(int8_exact, "addcmul_is_fma", lambda: False)
    _assert_same(exact_int8(net)(x), want)


@settings(max_examples=40, deadline=None)
@given(images=st.integers(1, 6), tokens=st.integers(1, 9), n_in=st.integers(1, 80), n_out=st.integers(1, 40),
       log_scale=st.floats(-9, 5), shift=st.floats(-3, 3), bias=st.booleans(), seed=st.integers(0, 2**16),
       version=st.sampled_from([3, 4]))
def test_property_exact_equals_one_call_per_image(images, tokens, n_in, n_out, log_scale, shift, bias, seed,
                                                  version):
    net = _linears(n_in, n_out, 3, bias=bias, seed=seed)
    net[0].version = version           # 3: the full uint8 range (no reduce_range)
    g = torch.Generator().manual_seed(seed)
    per_image = 10 ** (log_scale + torch.rand(images, 1, 1, generator=g) * 2 - 1)
    x = (torch.randn(images, tokens, n_in, generator=g) + shift) * per_image
    want = _per_call(net, x)
    got = exact_int8(net)(x)
    _assert_same(got, want)
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def _tie_values(lo: float, hi: float) -> torch.Tensor:
    """Values in [lo, hi] whose x * (1 / scale) is exactly k + 0.5 in float32, for the scale torch
    picks for that range (reduce_range)."""
    scale, _ = torch._choose_qparams_per_tensor(torch.tensor([lo, hi]), reduce_range=True)
    scale = torch.tensor(np.float32(scale))
    inverse = 1 / scale
    k = (torch.arange(lo * inverse.item(), hi * inverse.item() - 1).floor()).repeat(3)
    near = ((k + 0.5) / inverse.double()).float().view(3, -1)
    near = torch.cat([near[0], torch.nextafter(near[1], near[1] + 1), torch.nextafter(near[2], near[2] - 1)])
    ties = near[((near * inverse) == k + 0.5) & (near >= lo) & (near <= hi)]
    assert len(ties) > 20 and ((ties / scale).round() != (ties * inverse).round()).any()
    return ties


def test_values_on_rounding_ties_quantize_as_the_kernel():
    # the kernel multiplies by the float32 reciprocal, rounds half to even, then adds the zero
    # point: x / scale, rounding half away, or adding an odd zero point before rounding would not
    width, images = 128, []
    for lo, hi in ((-1.0, 2.7), (-1.03, 2.7), (-0.2, 1.9)):
        zero_point = torch._choose_qparams_per_tensor(torch.tensor([lo, hi]), reduce_range=True)[1]
        images.append(torch.cat([torch.tensor([lo, hi]), _tie_values(lo, hi).repeat(width)])[:width])
        images.append(images[-1].flip(0))
        assert zero_point % 2 == (lo == -1.03), "the ranges must give even and odd zero points"
    x = torch.stack(images).view(len(images), 1, width)
    net = _linears(width, 16)
    _assert_same(exact_int8(net)(x), _per_call(net, x))


@pytest.mark.parametrize("version, lo, hi", [(4, -2.0099189281463623, 0.6081293821334839),
                                             (3, -7.544295787811279, 3.173227548599243)])
def test_the_minimum_clipped_to_zero_as_the_kernel(version, lo, hi):
    # ranges whose zero point (from the double-precision formula) is one less than -round(lo / scale)
    # in float32: the minimum quantizes to -1, which the kernel clips to 0
    scale, zero_point = choose_qparams(np.float32([lo]), np.float32([hi]), reduce_range=version == 4)
    assert np.round(np.float32(lo) * (np.float32(1) / scale)) < -zero_point
    net = _linears(48, 10)
    net[0].version = version
    x = torch.rand(3, 4, 48) * (hi - lo) + lo
    x[:, 0, :2] = torch.tensor([lo, hi])
    _assert_same(exact_int8(net)(x), _per_call(net, x))


# -- the steps on their own ----------------------------------------------------------------------
@pytest.mark.parametrize("reduce_range", [True, False])
def test_choose_qparams_matches_torch(reduce_range):
    # torch's _choose_qparams_per_tensor runs the same quant_utils::ChooseQuantizationParams
    for image in _awkward_batch(images=10, seed=5):
        scale, zero_point = choose_qparams(image.min()[None], image.max()[None], reduce_range)
        want_scale, want_zero_point = torch._choose_qparams_per_tensor(image, reduce_range=reduce_range)
        assert scale.item() == np.float32(want_scale) and zero_point.item() == want_zero_point


def _float32_round(value: Fraction) -> np.float32:
    """``value`` rounded to the nearest float32, ties to even: the exact oracle for fma32."""
    guess = np.float32(float(value))
    candidates = [guess, np.nextafter(guess, np.float32(np.inf)), np.nextafter(guess, np.float32(-np.inf))]
    return min(candidates, key=lambda f: (abs(Fraction(float(f)) - value), int(f.view(np.int32)) & 1))


def test_fma32_rounds_once_where_float64_would_round_twice():
    # a*b + c = 2**30 + 192 - 2**-40: float64 rounds it onto the float32 tie 2**30 + 192, which
    # float32 then rounds to even (2**30 + 256); the exact value rounds down to 2**30 + 128
    a, b, c = (torch.tensor([v], dtype=torch.float32) for v in (64 * (1 + 2**-23), 1 - 2**-23, 2**30 + 128))
    naive = (a.double() * b.double() + c.double()).float()
    want = _float32_round(Fraction(a.item()) * Fraction(b.item()) + Fraction(c.item()))
    assert naive.item() != want, "the example must defeat float64 double rounding"
    assert fma32(a, b, c).item() == want


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-2**24, 2**24), st.floats(2**-20, 1e2, width=32),
                          st.floats(-1e3, 1e3, width=32)), min_size=1, max_size=8))
def test_fma32_is_correctly_rounded(triples):
    a, b, c = (torch.tensor(column, dtype=torch.float32) for column in zip(*triples))
    a = a.round()                                          # integer-valued, as accumulators are
    want = [_float32_round(Fraction(x) * Fraction(y) + Fraction(z))
            for x, y, z in zip(a.tolist(), b.tolist(), c.tolist())]
    assert fma32(a, b, c).tolist() == [float(w) for w in want]
    assert fma32(a, b, c, a_bound=a.abs().double().numpy()).tolist() == [float(w) for w in want]


# -- drop-in: same state, same hash, still an INT8 linear for the rest of vitrobust ----------------
def test_state_dict_and_weight_hash_are_unchanged():
    net = _linears(48, 64, 10)
    exact = exact_int8(net)
    state, exact_state = net.state_dict(), exact.state_dict()
    assert list(state) == list(exact_state)
    assert int8_state_hash(exact_state) == int8_state_hash(state)
    wrapped = [BatchInvariant(net, exact=exact).state_dict() for exact in (True, False)]
    assert int8_state_hash(wrapped[0]) == int8_state_hash(wrapped[1])


def test_loaded_weights_replace_the_cached_unpacked_ones():
    exact, other = exact_int8(_linears(48, 10, seed=0)), _linears(48, 10, seed=1)
    x = _awkward_batch()
    exact(x)                                                # fills the cache
    exact.load_state_dict(other.state_dict())
    _assert_same(exact(x), _per_call(other, x))


def test_first_call_under_inference_mode_leaves_the_module_usable_outside_it():
    # metrics.gflops and predict run under inference mode; what the first call caches (unpacked
    # weights, the per-thread scratch: hence a fresh thread) must stay writable and usable after
    net = exact_int8(_linears(48, 10))
    x = _awkward_batch()
    results = []

    def run():
        with torch.inference_mode():
            results.append(net(x))
        results.append(net(x))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert len(results) == 2, "the call after inference mode failed"
    _assert_same(results[1], results[0].clone())


def test_still_counted_as_an_int8_linear():
    net = _linears(48, 64, 10)
    assert metrics.param_count(exact_int8(net)) == metrics.param_count(net) == 48 * 64 + 64 + 64 * 10 + 10


def test_batch_invariant_scores_batches_exactly_and_refuses_gradients():
    net = _linears(48, 64, 10)
    x = _awkward_batch()
    exact, per_call = BatchInvariant(net), BatchInvariant(net, exact=False)
    assert exact.exact and not per_call.exact
    _assert_same(exact(x), per_call(x))
    with pytest.raises(Int8GradientError):
        exact(x.clone().requires_grad_(True)).sum().backward()


def test_straight_through_gradient_is_that_of_the_dequantized_fp32_linear():
    net = exact_int8(_linears(48, 16, bias=True), straight_through=True)
    layer = net[0]
    x = _awkward_batch()[:4].clone().requires_grad_(True)
    out = net(x)
    _assert_same(out.detach(), exact_int8(_linears(48, 16))(x.detach()))
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    fp32 = x.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(fp32, layer.dequantized_weight()).backward(grad_out)
    assert torch.allclose(x.grad, fp32.grad, atol=1e-6)
    assert layer.dequantized_weight().shape == (16, 48)


def test_the_saturation_probe_agrees_with_the_kernel_on_other_values():
    # 8-bit activations times +127 weights: a pair of products is 64770, past int16
    layer = ExactDynamicLinear(32, 1, bias_=False)
    layer.set_weight_bias(torch.quantize_per_tensor(torch.full((1, 32), 1.0), 1 / 127, 0, torch.qint8), None)
    layer.version = 3
    x = torch.full((1, 32), 2.0)
    x[0, 0] = 0.0
    kernel = float(super(ExactDynamicLinear, layer).forward(x)[0, 0])
    assert (abs(kernel - 62.0) > 0.5) == int8_exact.full_range_saturates()
    assert float(layer(x)[0, 0]) == kernel   # whichever it is, the module gives the kernel's answer


def test_the_product_is_the_one_the_fixture_picked(integer_product):
    w = ExactDynamicLinear.from_dynamic(_linears(8, 4)[0])._unpacked()
    product = int8_exact.exact_int_matmul(torch.randint(-128, 128, (3, 8)).float(), w)
    assert product.dtype == (torch.int32 if integer_product == "int8 gemm" else torch.float32)


def test_the_int8_gemm_is_chosen_from_the_cpu_features(monkeypatch):
    for features, fast in (({"avx2": True}, False), ({"avx2": True, "avx512_vnni": True}, True),
                           ({"avx_vnni": True}, True), ({"amx_int8": True, "avx512_vnni": False}, True)):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: features)
        assert int8_exact.int8_gemm_is_fast.__wrapped__() == fast    # (uncached)


def test_matrices_of_one_row_or_column_multiply_exactly(integer_product):
    # a (1, n) matrix transposed from (n, 1) has strides (1, 1), which torch's _int_mm misreads
    w = ExactDynamicLinear.from_dynamic(_linears(1, 3)[0])._unpacked()
    factor = torch.randint(-128, 128, (4, 1)).float().t().reshape(-1, 1)[:1]
    want = factor.double() @ w.float_t.double()
    assert torch.equal(int8_exact.exact_int_matmul(factor, w).double(), want)


def test_the_float_copy_of_the_weights_is_made_only_for_the_float_product():
    layer = ExactDynamicLinear.from_dynamic(_linears(16, 8)[0])
    x = torch.randn(3, 16)
    with int8_exact.forced_product(True):
        layer(x)
    assert "float_t" not in vars(layer._unpacked())          # the int8 GEMM needs no float copy
    with int8_exact.forced_product(False), torch.inference_mode():
        layer(x)
    float_t = vars(layer._unpacked())["float_t"]
    assert not float_t.is_inference() and torch.equal(float_t, layer._unpacked().int8_t.float())
