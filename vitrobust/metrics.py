"""Model measurements: clean accuracy, ASR, parameters, size, GFLOPs and throughput.

Conventions (the ViT literature's, so numbers compare with papers):
- ASR is computed over the images the *target* classifies correctly when clean; robust accuracy
  (correct under attack, over all images) is reported beside it.
- GFLOPs are multiply-accumulates per image (timm's deit_small_patch16_224 at 224x224: 4.6).
- Size is the byte count of the serialized state_dict / 1e6, so INT8 is measured, not estimated.
"""
from __future__ import annotations

import io
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.ao.nn.quantized.dynamic as nnqd
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .device import home_device, synchronize
from .zoo.wrapper import ModelWrapper


@dataclass(frozen=True)
class RateCount:
    """k successes out of n, with the per-image outcome vector (NaN: not in the denominator)."""

    k: int
    n: int
    outcomes: torch.Tensor

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")


@torch.inference_mode()
def correct(model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor,
            batch_size: int = 256) -> torch.Tensor:
    """Per-image bool: does ``model`` classify the image correctly?"""
    return model.predict(images, batch_size) == labels


def accuracy(clean_correct: torch.Tensor) -> RateCount:
    outcomes = clean_correct.float()
    return RateCount(int(clean_correct.sum()), len(clean_correct), outcomes)


def attack_success(clean_correct: torch.Tensor, adv_correct: torch.Tensor) -> RateCount:
    """ASR as the README defines it: fooled among the images the target got right clean."""
    fooled = clean_correct & ~adv_correct
    outcomes = torch.where(clean_correct, fooled.float(), torch.full_like(fooled, float("nan"), dtype=torch.float))
    return RateCount(int(fooled.sum()), int(clean_correct.sum()), outcomes)


def param_count(model: nn.Module) -> int:
    """Parameters, each shared tensor counted once; quantized Linear weights included."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    for module in model.modules():
        if _is_dynamic_quantized_linear(module):
            w, b = module._weight_bias()
            total += w.numel() + (b.numel() if b is not None else 0)
    return total


def size_mb(model: nn.Module) -> float:
    """Bytes of the serialized state_dict of the network (buffers of the wrapper excluded) / 1e6."""
    net = model.net if isinstance(model, ModelWrapper) else model
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


def _is_dynamic_quantized_linear(module: nn.Module) -> bool:
    return isinstance(module, nnqd.Linear)   # the exact batched subclass (int8_exact) too


@contextmanager
def _torch_int8_kernels(model: nn.Module):
    """Run every INT8 linear on torch's own kernel, which the flop counter does not see (the
    count's hook adds its MACs). The exact batched linears' integer product is a GEMM the counter
    sees on some CPUs and not on others (float32 or ``_int_mm``, :mod:`.compress.int8_exact`):
    counted as it ran, an INT8 model's GFLOPs would depend on the machine (measured: twice the
    FP32 count where the product was a float GEMM)."""
    swapped = [m for m in model.modules() if _is_dynamic_quantized_linear(m) and type(m) is not nnqd.Linear]
    for m in swapped:
        m.forward = types.MethodType(nnqd.Linear.forward, m)
    try:
        yield
    finally:
        for m in swapped:
            del m.forward   # the class's own again


@contextmanager
def _unfused_attention(model: nn.Module):
    """timm's fused scaled_dot_product_attention is invisible to the flop counter on CPU;
    count the explicit q @ k^T and attn @ v instead (same math)."""
    switched = [m for m in model.modules() if getattr(m, "fused_attn", False) is True]
    for m in switched:
        m.fused_attn = False
    try:
        yield
    finally:
        for m in switched:
            m.fused_attn = True


@torch.inference_mode()
def gflops(model: ModelWrapper, input_size: int | None = None, device=None) -> float:
    """Multiply-accumulates per image, in G (FlopCounterMode counts a MAC as 2 FLOPs).

    Dynamic-INT8 Linear layers are invisible to the counter; a hook counts their MACs (the same
    count as the FP32 layer: quantization changes the number format, not the arithmetic count).
    The probe image is made on ``device`` (default: where the model computes).
    """
    size = input_size or model.info.input_size
    x = torch.rand(1, 3, size, size, device=device or home_device(model))
    quantized_macs = []

    def count_linear(module, inputs, output):
        quantized_macs.append(inputs[0].numel() // module.in_features * module.in_features * module.out_features)

    hooks = [m.register_forward_hook(count_linear) for m in model.modules() if _is_dynamic_quantized_linear(m)]
    model.eval()
    try:
        with _unfused_attention(model), _torch_int8_kernels(model), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return (counter.get_total_flops() / 2 + sum(quantized_macs)) / 1e9


@torch.inference_mode()
def throughput(model: ModelWrapper, input_size: int | None = None, batch_size: int | None = None,
               warmup: int = 1, repeats: int = 3, device=None) -> float:
    """Images per second: ``warmup`` untimed batches, then the fastest of ``repeats`` timed ones.

    The defaults are the models table's (a figure of the report, timed for every model of every
    run); a speed a check compares is timed side by side, with more repeats
    (:func:`throughput_side_by_side`).

    The fastest, not the median: other load on the machine only ever adds time, so the minimum is
    the estimate least disturbed by it (the same reasoning as ``timeit``). ``batch_size`` defaults
    to :func:`default_batch_size` for the input size.

    The batch is made on ``device`` (default: where the model computes, the CPU for INT8). CUDA
    runs asynchronously, so the device is synchronized before the clock starts and before it
    stops: otherwise the time is that of launching the work, not doing it.
    """
    size = input_size or model.info.input_size
    batch_size = batch_size or default_batch_size(size)
    device = device or home_device(model)
    x = torch.rand(batch_size, 3, size, size, device=device)
    model.eval()
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        model(x)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return batch_size / min(times)


def throughput_side_by_side(models: list[ModelWrapper], rounds: int = 3,
                            batch_sizes: list[int | None] | None = None) -> list[float]:
    """Images per second of several models timed in alternation; each keeps its best round.

    Throughputs taken at different moments of a long session compare the moments as much as the
    models: a cold run measured DynamicViT-tiny at keep-rate 0.5 slower than dense (5589 vs 6325
    img/s) right after training it, while side by side it is 1.3x faster. Alternating rounds put
    every model under the same conditions, as a benchmark would. ``batch_sizes``: each model's
    (default :func:`default_batch_size`), e.g. the one its record was timed at.
    """
    best = [0.0] * len(models)
    batch_sizes = batch_sizes or [None] * len(models)
    for round_ in range(rounds):
        for i, model in enumerate(models):
            # warm-up is for lazy first-call work (allocations, kernel choice): once per model
            warmup = 2 if round_ == 0 else 0
            best[i] = max(best[i], throughput(model, batch_size=batch_sizes[i], warmup=warmup, repeats=5))
    return best


def efficiency(model: ModelWrapper, input_size: int | None = None, batch_size: int | None = None,
               timed: bool = True) -> dict:
    """Params, size, GFLOPs and throughput (with its batch size: ``batch_size``, default
    :func:`default_batch_size`) of one model, in one place. ``timed=False``: throughput None,
    to be timed later when nothing else runs."""
    size = input_size or model.info.input_size
    batch_size = batch_size or default_batch_size(size)
    return {"params": param_count(model), "size_mb": size_mb(model), "gflops": gflops(model, size),
            "throughput": throughput(model, size, batch_size) if timed else None,
            "throughput_batch": batch_size}


def default_batch_size(input_size: int) -> int:
    """Throughput batch: 64 small images, 8 at ImageNet size (memory and time stay modest)."""
    return 64 if input_size <= 64 else 8
