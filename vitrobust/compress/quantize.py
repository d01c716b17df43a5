"""``:int8`` — post-training dynamic INT8 quantization of every ``nn.Linear`` (CPU).

``torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)`` on a deep copy
of the base: weights are stored as per-tensor INT8, activations are quantized on the fly with a
scale chosen per call (dynamic, per-tensor). Convolutions (the patch embedding), LayerNorms,
position embeddings and the attention products stay FP32. No training; quantization is
deterministic and takes well under a second, so nothing is cached.

How INT8 models are scored (a deliberate choice, see the README's compression table): dynamic
quantization picks the activation scale over the *whole tensor of one call*, so an image's
logits depend on the other images of its batch (measured: up to 0.24 logits for INT8 vs 4e-6
for FP32, and a noise attack's ASR moved from 0.47 batched to 1.00 one image per call). Every
image is therefore scored as a deployed single-image request would be, whatever batch size an
attack or the engine chooses. :class:`BatchInvariant` does that in one batched call: its linears
are :class:`~vitrobust.compress.int8_exact.ExactDynamicLinear`, which replay torch's fbgemm kernel
(range, scale and zero point, rounding, integer product, dequantization) with the activation
parameters chosen per image, so the logits are bit for bit those of one call per image
(``tests/test_int8_exact.py`` checks that against torch's kernel; ``bench/bench_int8.py`` on the
default zoo: 0 differing predictions, logit difference 0; at one thread 2.5-4.5x faster than one
call per image, where torch's own batched kernel, which mixes images, is 3-5x and the FP32 rest
of the net caps any batched path at 5-8x). Where torch's kernel is not fbgemm (``qnnpack`` /
``onednn`` engines) it falls back to one call per image (exact by construction, slower). The
state_dict, hence the weight hash keying cached results, is that of torch's modules.

Devices: torch has no CUDA kernels for dynamic INT8, so the model is pinned to the CPU
(``ModelInfo.pinned_device``): :func:`vitrobust.device.place` never moves it, and its
:class:`~vitrobust.zoo.wrapper.ModelWrapper` moves inputs from the run's device to the CPU and
the logits back, so attacks and scoring on CUDA reach it unchanged.

Gradients: quantized linears have none (torch only warns and returns nothing). The wrapper says
``differentiable=False`` so gradient attacks are refused up front, and a backward through the
INT8 net raises :class:`Int8GradientError` instead of silently producing zero / None. The
registration declares the FP32 parent as the gradient surrogate, so the attack strategies
``straight-through`` (INT8 forward, FP32 backward: :mod:`vitrobust.attacks.straight_through`)
and ``transfer`` know which model to take gradients from.
"""
from __future__ import annotations

import copy
import time
import warnings

import torch
from torch import nn

from ..zoo import cache
from ..zoo.variant import variant_wrapper
from ..zoo.wrapper import ModelWrapper
from . import register_compression
from .int8_exact import exact_int8, fbgemm_kernel

META = {"compression": "int8", "bits": 8,
        "scheme": "dynamic per-tensor activations, per-tensor weights"}


class Int8GradientError(RuntimeError):
    """A backward pass reached a dynamically quantized model, which has no gradients."""


class _NoBackward(torch.autograd.Function):
    """Identity on the INT8 logits whose backward refuses, naming the alternatives."""

    @staticmethod
    def forward(ctx, images, logits):
        return logits.clone()

    @staticmethod
    def backward(ctx, grad):
        raise Int8GradientError(
            "INT8 (dynamically quantized) models have no gradients; attack them with a black-box "
            "attack, or with strategy 'straight-through' or 'transfer' (gradients of the FP32 parent)")


class BatchInvariant(nn.Module):
    """Runs ``net`` so that dynamic activation scales never mix images: batched with per-image
    exact linears (``exact``, the default on fbgemm), else one image per call."""

    def __init__(self, net: nn.Module, exact: bool | None = None):
        super().__init__()
        self.exact = fbgemm_kernel() if exact is None else exact
        self.net = exact_int8(net) if self.exact else net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # CPU autocast (--vitrobust-precision bf16 on the CPU) must not reach quantized kernels
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            out = self.net(x) if self.exact else torch.cat([self.net(image) for image in x.split(1)])
        if torch.is_grad_enabled() and x.requires_grad:
            out = _NoBackward.apply(x, out)
        return out


def quantize_net(net: nn.Module) -> nn.Module:
    """A dynamically INT8-quantized deep copy of ``net`` (CPU), with torch's deprecation noise off."""
    net = copy.deepcopy(net).cpu().eval()
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao (not a dependency here); the
        # eager API still works in the pinned torch, so silence only these warnings, only here.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao")
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions")
        return torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)


def int8_state_hash(state: dict) -> str:
    """:func:`vitrobust.zoo.cache.state_hash` that also sees packed INT8 weights (tuples)."""
    flat = {}
    for key, value in state.items():
        if isinstance(value, (tuple, list)):
            for i, part in enumerate(value):
                if isinstance(part, torch.Tensor):
                    flat[f"{key}.{i}"] = part
        else:
            flat[key] = value
    return cache.state_hash(flat)


@register_compression("int8", about="dynamic INT8 quantization of every nn.Linear (batch-invariant scoring)",
                      surrogate="parent")
def apply(base: ModelWrapper, *, name: str, progress: bool = True) -> ModelWrapper:
    """Dynamic INT8 quantization (torch.ao quantize_dynamic) of ``base``'s linears."""
    start = time.perf_counter()
    net = BatchInvariant(quantize_net(base.net))
    model = variant_wrapper(name, base, net, differentiable=False, meta=META).eval()
    model.info.pinned_device = "cpu"   # never moved to CUDA; its wrapper moves inputs and logits
    model.info.weight_hash = int8_state_hash(model.net.state_dict())
    model.info.build_seconds = time.perf_counter() - start
    return model
