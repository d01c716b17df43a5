"""Dynamic INT8 linears scored in batches, bit for bit as one image per call.

torch's dynamic quantized linear (``torch.ao.nn.quantized.dynamic.Linear``: the op
``quantized::linear_dynamic(x, packed, reduce_range=True)``, on x86 the fbgemm kernel
``PackedLinearWeight::apply_dynamic_impl``) picks one activation scale and zero point per *call*,
over the whole input tensor, so an image's logits depend on its batch-mates.
:class:`ExactDynamicLinear` does what that kernel does, but with the activation parameters chosen
per image (row ``b`` of dimension 0): the logits of image ``b`` are those of a call on image
``b`` alone, whatever else is in the batch. It replays the kernel step by step:

1. range: ``min``/``max`` over the image's elements (fbgemm ``FindMinMax``; min/max are exact,
   so their SIMD order does not matter);
2. scale and zero point: ``quant_utils::ChooseQuantizationParams`` with qmin/qmax 0/255, halved
   to 0/127 by ``reduce_range``; the range is widened to include 0, the scale computed in double
   and used as float, scales below ``6.1e-5f`` raised to it, the zero point rounded half to even
   (:func:`choose_qparams`);
3. quantize: fbgemm ``QuantizeAvx2``, ``cvtps(x * (1.f / scale)) + zero_point`` in float32,
   clipped to [0, 255] (the LEGACY variant, ``cvtps(fma(x, 1.f / scale, zero_point))``, differs
   on ties and is measurably not the one torch's kernel runs);
4. the uint8 x int8 product: integers, accumulated exactly as fbgemm does in int32, of the
   zero-point-centred factors (fbgemm's row / column offsets, folded in), by an int8 GEMM or a
   float GEMM that cannot round (:func:`exact_int_matmul`);
5. dequantize: fbgemm ``requantizeForFloatAvx2``, ``fma(float(acc), a_scale * w_scale, bias)``
   (the source has a multiply and an add; the build contracts them into one FMA: measured, a
   separate multiply and add differ from the kernel in the last bit of ~1 output in 4), with
   ``float(acc)`` rounding from 2**24 on as ``cvtepi32_ps`` does (torch's int32 to float32
   conversion rounds the same way). The FMA is ``torch.addcmul``, where it is one
   (:func:`addcmul_is_fma`: torch's own build contracts it too), else emulated (:func:`fma32`).

Exactness is checked, not assumed: ``tests/test_int8_exact.py`` compares against torch's kernel
image by image (random nets, varied and degenerate ranges, rounding ties, a timm ViT, property
tests), and ``bench/bench_int8.py`` on the default zoo. Only the INT8 linears are made exact: the
FP32 rest of a net must be batch-invariant itself (it is in the zoo's ViTs: measured 0 logit
difference; CPU GELU is not where an image's element count is no multiple of the SIMD width).

``ExactDynamicLinear`` subclasses torch's module, so its state_dict (keys, packed weights,
``version``) is the original's, weight hashes do not change, and what recognizes an INT8 linear
(``isinstance`` of torch's class: :mod:`vitrobust.metrics`, :mod:`vitrobust.in_effect`) still does.

Gradients: none by default (torch's module has none either). ``straight_through=True`` keeps the
exact INT8 forward and back-propagates as the FP32 linear with the dequantized INT8 weights
(input gradient only; the weights are not trainable).

Speed (``bench/bench_int8.py``, one thread): a layer costs two reductions over the batch (the
ranges), two elementwise passes over its input (scale, round), one integer-exact GEMM and two
passes over its output (to float, the FMA), each a separate torch op. The GEMM is
``torch._int_mm`` where the CPU has VNNI, else a float32 GEMM (:func:`int8_gemm_is_fast`):
oneDNN's int8 GEMM is fast only with VNNI (AVX-512 VNNI, AVX-VNNI or AMX); on an AVX2-only CPU
(an AMD EPYC CI machine) it measured 40x slower than sgemm on the zoo's shapes. The rest of a
ViT runs in FP32 on both paths and caps any batched one: batching removes its per-call overhead
but not its arithmetic (attention costs as much per image in a batch as alone), so in the
default zoo even a batch whose linears cost nothing is only 5-8x faster than one call per image.

Per-image scalars (ranges, scales, bounds) are computed in numpy: a few dozen tiny torch ops per
layer cost more than the layer's arithmetic in the small default zoo.
"""
from __future__ import annotations

import copy
import functools
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.ao.nn.quantized.dynamic as nnqd
from torch import nn

SMALL_SCALE = np.float32(6.1e-5)   # quant_utils SMALL_SCALE_THRESHOLD (a float)


def choose_qparams(lo, hi, reduce_range: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-image float32 (scale, zero point) from the images' float32 minima / maxima, as
    ``quant_utils::ChooseQuantizationParams`` computes them (uint8, no sparsity, no power of 2).

    The C++ mixes float and double on purpose (double intermediates, float results); the numpy
    dtypes below follow it operation by operation."""
    qmin, qmax = (0, 127) if reduce_range else (0, 255)
    lo = np.minimum(np.asarray(lo, np.float32), np.float32(0))     # the range must contain 0
    hi = np.maximum(np.asarray(hi, np.float32), np.float32(0))
    scale = (hi.astype(np.float64) - lo) / (qmax - qmin)
    if (scale < SMALL_SCALE).any():    # (degenerate scales are below it too: skipped when none is)
        lo, hi, scale = _small_ranges(lo, hi, scale, qmax - qmin)
    lo_steps, hi_steps = lo / scale, hi / scale                     # float64
    zero_point = np.where(abs(qmin) - np.abs(lo_steps) < abs(qmax) - np.abs(hi_steps),
                          qmin - lo_steps, qmax - hi_steps)
    return scale.astype(np.float32), np.round(np.clip(zero_point, qmin, qmax)).astype(np.float32)


def _small_ranges(lo, hi, scale, levels):
    """:func:`choose_qparams`' (lo, hi, scale) where some scales are below ``SMALL_SCALE``:
    degenerate ones (0, or no float32 reciprocal) become 0.1; other small ones are raised to the
    threshold, the range stretched to match (in float, as in C++)."""
    with np.errstate(divide="ignore", over="ignore"):
        degenerate = (scale.astype(np.float32) == 0) | np.isinf(np.float32(1) / scale.astype(np.float32))
    scale = np.where(degenerate, 0.1, scale)
    small = scale < np.float64(SMALL_SCALE)
    if small.any():
        amplifier, span = SMALL_SCALE / scale.astype(np.float32), SMALL_SCALE * np.float32(levels)
        new_lo = np.where(lo == 0, lo, np.where(hi == 0, -span, lo * amplifier))
        new_hi = np.where(lo == 0, span, np.where(hi == 0, hi, hi * amplifier))
        lo, hi = np.where(small, new_lo, lo), np.where(small, new_hi, hi)
        scale = np.where(small, np.float64(SMALL_SCALE), scale)
    return lo, hi, scale


_BELOW_FLOAT = (1 << 29) - 1   # float64 mantissa bits a float32 does not have
_FLOAT_TIE = 1 << 28           # ... set to exactly half a float32 ulp: a float32 rounding tie
_CHUNK = 1 << 18               # float64 elements fma32 works on at a time (2 MB: see fma32)
_scratch = threading.local()   # fma32's float64 scratch, reused from call to call (per thread)


def fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, a_bound: np.ndarray | None = None) -> torch.Tensor:
    """float32 ``fma(a, b, c)`` of float32 values (any dtype holding them; broadcast, at least
    1-D): ``a * b + c`` rounded once.

    Emulated in float64, where the product of two floats is exact and the sum is rounded once;
    rounding that to float32 is a second rounding, which can only go wrong when the float64 sum
    was inexact *and* landed exactly on a float32 tie. Those elements are redone exactly
    (:func:`_redo_ties`), unless ``a_bound`` proves there are none (:func:`_fits_float64`).

    The work goes in chunks of leading rows through one small float64 scratch tensor, kept from
    call to call: whole-batch float64 temporaries cost more in page faults than in arithmetic
    (measured: 10x)."""
    b, c = b.double(), c.double()
    exact = a_bound is not None and _fits_float64(a_bound, b.numpy(), c.numpy())
    shape = torch.broadcast_shapes(a.shape, b.shape, c.shape)
    out = torch.empty(shape, dtype=torch.float32, device="cpu")
    row = out[0].numel()
    rows = max(1, _CHUNK // max(1, row))
    scratch = getattr(_scratch, "tensor", None)
    if scratch is None or len(scratch) < min(rows, len(out)) * row:
        with torch.inference_mode(False):    # a normal tensor: writable in and out of inference mode
            scratch = _scratch.tensor = torch.empty(max(_CHUNK, row), dtype=torch.float64, device="cpu")
    for start in range(0, len(out), rows):
        a_, b_, c_ = (t[start:start + rows] if t.dim() == len(shape) and len(t) > 1 else t for t in (a, b, c))
        part = out[start:start + rows]
        total = scratch[:part.numel()].view(part.shape)
        total.copy_(a_.expand_as(total))
        torch.addcmul(c_, total, b_, out=total)
        part.copy_(total)
        if not exact:
            _redo_ties(part, total, a_, b_, c_)
    return out


def _fits_float64(a_bound: np.ndarray, b: np.ndarray, c: np.ndarray) -> bool:
    """Whether every ``a * b + c`` is exact in float64, given ``a`` integer-valued, ``|a| <=
    a_bound`` (broadcast against ``b`` and ``c``, float64 holding float32 values): the sum is a
    multiple of the lowest bit of ``b`` or ``c`` (24 bits below their leading one), and below
    ``a_bound * |b| + |c|``; at most 2**53 such multiples fit. Settles ~every call in the zoo's
    linears, on arrays without the token dimension, so the tie search is rarely needed."""
    lowest = np.minimum(np.frexp(b)[1], np.where(c != 0, np.frexp(c)[1], 1 << 20)) - 24
    return bool((np.frexp(a_bound * np.abs(b) + np.abs(c))[1] - lowest <= 53).all())


def _redo_ties(out: torch.Tensor, total: torch.Tensor, a, b, c) -> None:
    """Fix ``out = float32(total)`` in place where ``total`` (float64 ``a * b + c``) is a float32
    tie: TwoSum gives the float64 sum's rounding error, whose sign says which way the exact value
    lies from the tie (on an exact tie, float32 rounding already did the right thing)."""
    tie = ((total.view(torch.int64) & _BELOW_FLOAT) == _FLOAT_TIE).nonzero(as_tuple=True)
    if len(tie[0]):
        a, b, c = (t.expand_as(total)[tie].double() for t in (a, b, c))
        product, total = a * b, total[tie]
        part = total - product
        error = (product - (total - part)) + (c - part)   # exact: a * b + c == total + error
        nudged = torch.nextafter(total, torch.where(error > 0, torch.inf, -torch.inf))
        out[tie] = torch.where(error == 0, total, nudged).float()


@functools.cache
def full_range_saturates() -> bool:
    """Whether torch's kernel saturates full-range (uint8, no ``reduce_range``) products on this
    CPU, probed once. Without VNNI, fbgemm multiplies uint8 by int8 with ``vpmaddubsw``, which
    sums pairs of products in int16 and saturates beyond 32767: 7-bit activations
    (``reduce_range``, every module since version 4) keep a pair below that, 8-bit ones do not.
    Measured on an AVX2-only AMD EPYC: a probe of 255 x -127 everywhere comes out saturated.
    Modules of version < 4 are then scored one image per call: exact by construction."""
    with warnings.catch_warnings():   # torch deprecates its quantized tensor constructors
        warnings.simplefilter("ignore")
        layer = nnqd.Linear(64, 1, bias_=False)
        layer.set_weight_bias(torch.quantize_per_tensor(torch.full((1, 64), -1.0), 1 / 127, 0, torch.qint8), None)
    layer.version = 3
    x = torch.ones(1, 64)
    x[0, 0] = 0.0                                 # range [0, 1]: scale 1/255, zero point 0
    exact = (63 * 255 * -127) / 255 / 127         # what an int32 accumulation gives: -63
    return abs(float(layer(x)[0, 0]) - exact) > 0.5


@functools.cache
def addcmul_is_fma() -> bool:
    """Whether float32 ``torch.addcmul`` rounds once here (:func:`rounds_once`), probed once."""
    return rounds_once(torch.addcmul)


def rounds_once(addcmul) -> bool:
    """Whether float32 ``addcmul(c, a, b, out=...)`` rounds ``c + a * b`` once, as an FMA (then
    the exact forward dequantizes with it, in one pass, instead of with :func:`fma32`).

    ``torch.addcmul`` does when the build contracts ATen's ``c + a * b`` into FMA instructions, as
    it contracts fbgemm's (measured in torch 2.14's x86-64 wheel). That is a property of the
    compiled kernel, so it is probed, in the broadcast pattern the exact forward uses and over row
    lengths that exercise the vector body and the scalar tail. Each probe's ``c`` is also
    ``-(a * b)`` rounded, so that a multiply and an add would give 0 where an FMA gives the
    product's rounding error: a non-fused build cannot pass by chance."""
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 5, 8, 15, 16, 17, 31, 33, 64, 100):
        a = torch.randint(-1 << 22, 1 << 22, (3, 5, n), generator=g).float()   # accumulators
        b = torch.rand(3, 1, 1, generator=g) * 1e-3                            # per-image multipliers
        for c in (torch.randn(n, generator=g), -(a * b)):                      # bias; a * b's error
            if not torch.equal(addcmul(c, a, b, out=a.clone()), fma32(a, b, c)):
                return False
    return True


class _StraightThrough(torch.autograd.Function):
    """Exact INT8 forward; backward of the FP32 linear with the dequantized weights."""

    @staticmethod
    def forward(ctx, x, module):
        ctx.module = module
        return module.exact_forward(x)

    @staticmethod
    def backward(ctx, grad):
        return grad @ ctx.module.dequantized_weight().to(grad.dtype), None   # no weight gradient


EXACT_FLOAT32_INPUTS = 1 << 10   # K up to which a float32 GEMM of int8 factors cannot round
# CPU features with which oneDNN multiplies int8 matrices in int8 (``torch.cpu.get_capabilities``)
INT8_GEMM_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def int8_gemm_is_fast() -> bool:
    """Whether ``torch._int_mm`` is the faster exact product here: where the CPU has VNNI (or AMX),
    oneDNN multiplies int8 by int8 in int8 (measured on an AVX-512 VNNI EPYC, one thread, the
    zoo's shapes: 2.2-5.8x faster than the float32 GEMM); without it, oneDNN emulates and is 40x
    slower (measured on an AVX2-only EPYC). Read from the CPU's features, once: both products
    are exact, so the choice changes the speed, never a number."""
    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(feature, False) for feature in INT8_GEMM_FEATURES)


_forced_int8_gemm: bool | None = None   # set by forced_product, else the CPU decides


@contextmanager
def forced_product(int8_gemm: bool):
    """Within: integer products by ``_int_mm`` (True) or the float GEMM (False), whatever the CPU
    would pick; for the tests and benchmarks that compare the two."""
    global _forced_int8_gemm
    before, _forced_int8_gemm = _forced_int8_gemm, int8_gemm
    try:
        yield
    finally:
        _forced_int8_gemm = before


def exact_int_matmul(factor: torch.Tensor, w: "_Weights") -> torch.Tensor:
    """``factor @ w`` exactly: ``factor`` (rows, K) holds integers in [-128, 127] (as float32),
    the weights int8 values. With VNNI (:func:`int8_gemm_is_fast`): ``torch._int_mm``, int8
    factors and int32 sums, exact below K = 2**17. Otherwise a float GEMM that cannot round:
    every product is at most 2**14 in magnitude, so every partial sum of K <= 1024 of them is an
    integer below 2**24, which float32 holds exactly (the GEMM's order of summation, blocking and
    FMAs cannot change the result); larger K runs in float64 (exact to 2**53, K < 2**39). The
    int32 result is int32; the float one holds the same integers."""
    int8_gemm = int8_gemm_is_fast() if _forced_int8_gemm is None else _forced_int8_gemm
    if int8_gemm:
        return torch._int_mm(row_major(factor, torch.int8), w.int8_t)
    return torch.mm(factor.to(w.float_t.dtype), w.float_t)


def row_major(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` as ``dtype`` with row-major strides, also along dimensions of size 1: ``_int_mm``
    reads a (1, n) matrix with strides (1, 1), which ``contiguous()`` leaves as it is, as garbage
    (measured in torch 2.14: uninitialized memory comes out)."""
    return torch.empty(t.shape, dtype=dtype, device=t.device).copy_(t)


@dataclass(eq=False)
class _Weights:
    """One packed weight, unpacked into what the exact forward needs. The float copy of the
    int8 weights (4x their size, 8x in float64) is made on first use, by the float GEMM: where
    ``_int_mm`` is the product (VNNI) it is never made."""

    packed: object             # the packed params these were unpacked from
    int8_t: torch.Tensor       # the int8 weights, (in, out), row-major
    exact: torch.dtype         # float32, or float64 beyond EXACT_FLOAT32_INPUTS inputs
    col_sum: torch.Tensor      # int32 sum over inputs, per output
    col_l1: np.ndarray         # float64 sum over inputs of |w - zp_w|, per output
    zero_point: torch.Tensor | None   # int32 weight zero point(s); None when all are 0
    scale: torch.Tensor        # float32 weight scale(s)
    bias: torch.Tensor | None  # float32

    @functools.cached_property
    def float_t(self) -> torch.Tensor:
        """``int8_t`` in ``exact`` (the float GEMM's operand): a normal tensor even when first
        asked for under inference mode, so that a forward with autograd can use it later."""
        with torch.inference_mode(False):
            return self.int8_t.to(self.exact)


class ExactDynamicLinear(nnqd.Linear):
    """``torch.ao.nn.quantized.dynamic.Linear`` with per-image activation quantization (see the
    module docstring); same state_dict, same numbers as one call per image."""


    def __init__(self, *args, straight_through: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.straight_through = straight_through

    @classmethod
    def from_dynamic(cls, mod: nnqd.Linear, straight_through: bool = False) -> "ExactDynamicLinear":
        """The same INT8 weights, bias and kernel version as ``mod``, computed per image."""
        weight, bias = mod._weight_bias()
        new = cls(mod.in_features, mod.out_features, bias is not None, dtype=mod._packed_params.dtype,
                  straight_through=straight_through)
        new.set_weight_bias(weight, bias)
        new.version = mod.version
        new.train(mod.training)
        return new

    def _get_name(self):
        return "ExactDynamicQuantizedLinear"

    def _unpacked(self) -> _Weights:
        """The packed weights in the forms the exact forward uses, unpacked once per packed weight
        (``load_state_dict`` repacks, and this follows)."""
        packed = self._packed_params._packed_params
        cached = getattr(self, "_exact_weights", None)
        if cached is None or cached.packed is not packed:
            with torch.inference_mode(False):   # normal tensors, usable in and out of inference mode
                cached = self._exact_weights = self._unpack(packed)
        return cached

    def _unpack(self, packed) -> _Weights:
        weight, bias = self._weight_bias()
        if weight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            scale = torch.tensor([weight.q_scale()], dtype=torch.float32, device="cpu")
            zero_point = torch.tensor([weight.q_zero_point()], dtype=torch.int32, device="cpu")
        else:
            scale = weight.q_per_channel_scales().float()
            zero_point = weight.q_per_channel_zero_points().to(torch.int32)
        w_int = weight.int_repr()
        exact = torch.float32 if self.in_features <= EXACT_FLOAT32_INPUTS else torch.float64
        return _Weights(packed, row_major(w_int.t(), torch.int8), exact,
                        w_int.sum(1, dtype=torch.int32),
                        (w_int.int() - zero_point.view(-1, 1)).abs().sum(1).double().numpy(),
                        zero_point if zero_point.any() else None, scale,
                        None if bias is None else bias.detach().float())

    def dequantized_weight(self) -> torch.Tensor:
        """The INT8 weights in float32, (out, in) as ``nn.Linear.weight``: the straight-through
        backward's matrix."""
        w = self._unpacked()
        zero_point = 0 if w.zero_point is None else w.zero_point.view(-1, 1)
        return (w.int8_t.t().float() - zero_point) * w.scale.view(-1, 1)

    @torch.no_grad()
    def exact_forward(self, x: torch.Tensor) -> torch.Tensor:
        """What ``quantized::linear_dynamic`` returns for each image alone, for the whole batch
        (no autograd graph, as torch's kernel has none)."""
        images, n_in, n_out = len(x), self.in_features, self.out_features
        if not x.numel():                                      # no image, or images of no row
            return torch.empty(*x.shape[:-1], n_out, dtype=x.dtype, device="cpu")
        reduce_range = self.version is not None and self.version >= 4   # as torch's forward
        if not reduce_range and full_range_saturates():   # a product we cannot replay: per image
            return torch.cat([super(ExactDynamicLinear, self).forward(image) for image in x.split(1)])
        w = self._unpacked()
        x32 = x.float().reshape(images, -1, n_in)              # (image, row, input)
        flat = x32.view(images, -1) if x32.is_contiguous() else x32.reshape(images, -1)
        lo, hi = flat.amin(1).numpy(), flat.amax(1).numpy()   # (aminmax(dim=1) is much slower)
        scale, zero_point = choose_qparams(lo, hi, reduce_range)
        inverse = np.float32(1) / scale                        # the kernel's float32 reciprocal

        def each(values):      # a per-image numpy array, broadcast against x32
            return torch.from_numpy(values).view(-1, 1, 1)

        # quantized minus zero point, xq - zp = clip(round(x * inverse), -zp, 255 - zp); rounding
        # is monotonic, so the images' extremes show whether the (slow) clip does anything
        centred = (x32 * each(inverse)).round_()
        top, bottom = np.round(hi * inverse), np.round(lo * inverse)
        if ((bottom < -zero_point) | (top > 255 - zero_point)).any():
            centred.clamp_(each(-zero_point), each(255 - zero_point))
        # sum_k (xq - zp_x)(w - zp_w) in int32, as fbgemm (no overflow below K = 65536 inputs).
        # xq - zp_x is int8 when its extremes are (always, with reduce_range); else xq - 128 is,
        # and the shift is put back with the weights' column sums
        shifted = not ((np.minimum(top, 255 - zero_point) <= 127).all()
                       and (np.maximum(bottom, -zero_point) >= -128).all())
        factor = centred + each(zero_point - 128) if shifted else centred
        product = exact_int_matmul(factor.reshape(-1, n_in), w).view(images, -1, n_out)
        if shifted or w.zero_point is not None or product.dtype != torch.float32:
            acc = product.to(torch.int32)
            if shifted:
                acc -= torch.from_numpy(zero_point - 128).to(torch.int32).view(-1, 1, 1) * w.col_sum
            if w.zero_point is not None:
                acc -= w.zero_point * centred.sum(-1, keepdim=True).to(torch.int32)
            out = acc.float()                                   # as cvtepi32_ps (see 5. above)
        else:   # the product is acc itself, integers of at most 2**24 that float32 holds as they are
            out = product
        # dequantize: fma(float(acc), a_scale * w_scale, bias)
        multiplier = each(scale) * w.scale                      # float32, as the kernel's
        if w.bias is None:
            out.mul_(multiplier)
        elif addcmul_is_fma():
            torch.addcmul(w.bias, out, multiplier, out=out)
        else:   # |acc| per (image, output) is at most max |xq - zp_x| * sum_k |w - zp_w|
            bound = np.multiply.outer(np.maximum(top, -bottom).astype(np.float64), w.col_l1)[:, None]
            out = fma32(out, multiplier, w.bias, a_bound=bound)
        return out.view(*x.shape[:-1], n_out).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed_params.dtype != torch.qint8:
            return super().forward(x)        # float16 weights: no activation quantization at all
        if self.straight_through and torch.is_grad_enabled() and x.requires_grad:
            return _StraightThrough.apply(x, self)
        return self.exact_forward(x)


def fbgemm_kernel() -> bool:
    """Whether torch's dynamic INT8 linears run fbgemm (engines ``x86`` and ``fbgemm``), the
    kernel :class:`ExactDynamicLinear` reproduces (``qnnpack`` / ``onednn`` compute differently)."""
    return torch.backends.quantized.engine in ("x86", "fbgemm")


def exact_int8(net: nn.Module, straight_through: bool = False, inplace: bool = False) -> nn.Module:
    """``net`` (a ``quantize_dynamic`` result) with every dynamic linear an :class:`ExactDynamicLinear`.

    Same weights and state_dict; each image of a batch is scored as if it were its own call."""
    if type(net) is nnqd.Linear:
        return ExactDynamicLinear.from_dynamic(net, straight_through)
    net = net if inplace else copy.deepcopy(net)
    for name, child in list(net.named_children()):
        setattr(net, name, exact_int8(child, straight_through, inplace=True))
    return net
