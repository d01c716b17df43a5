"""Where models, attacks and training run, at what precision, and what to do when memory runs out.

The run's device comes from ``--vitrobust-device`` / ``--device`` or ``$VITROBUST_DEVICE``
(``auto``, ``cpu``, ``cuda``, ``cuda:N``); ``auto`` takes CUDA when torch sees a GPU. Every
tensor vitrobust creates names its device explicitly (tests run the engine under
``torch.set_default_device("meta")`` to prove it). Random draws stay on the CPU generators they
always used and are then moved, so a seed gives the same noise on every device.

Two process-wide settings exist because model building (``zoo.load_model``) takes no device:
:func:`set_training_device`, read by :func:`vitrobust.zoo.train.fit`, set by the engine and by
the CLI. Everything else receives its device as an argument.

torch is imported inside functions: the pytest plugin validates options without loading it.
"""
from __future__ import annotations

import os
import re
from contextlib import nullcontext
from typing import Callable

from .errors import VitrobustError

ENV = "VITROBUST_DEVICE"
DEFAULT_DEVICE = "auto"
PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_PRECISION = "fp32"
_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_training_device = None   # torch.device or None (CPU): see set_training_device


class DeviceError(VitrobustError):
    """A device or precision that cannot be used here; one line naming what can."""


def requested_device(text: str | None = None) -> str:
    """The device text asked for: ``text``, else ``$VITROBUST_DEVICE``, else ``auto``; checked
    for form (not availability) so a typo fails before anything is built."""
    value = (text or os.environ.get(ENV) or DEFAULT_DEVICE).strip().lower()
    if not _PATTERN.match(value):
        where = f"${ENV}" if not text and os.environ.get(ENV) else "device"
        raise DeviceError(f"{where} {value!r} is not a device; use auto, cpu, cuda or cuda:N")
    return value


def resolve_device(text: str | None = None):
    """The ``torch.device`` to run on; a DeviceError if CUDA is asked for and absent."""
    import torch

    value = requested_device(text)
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {value!r} asked for, but torch sees no CUDA GPU here; "
                          f"use cpu or auto instead")
    device = torch.device(value)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"device {value!r} asked for, but torch sees {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    return device


def check_precision(precision: str | None) -> str:
    value = (precision or DEFAULT_PRECISION).lower()
    if value not in PRECISIONS:
        raise DeviceError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return value


def autocast(device, precision: str):
    """``torch.autocast`` for ``precision`` on ``device``; at fp32 nothing at all (so the CPU's
    default path is bit for bit what it was before precisions existed)."""
    import torch

    if check_precision(precision) == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def synchronize(device) -> None:
    """Wait for queued CUDA work, so a timer measures the work and not its launch."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def home_device(model):
    """Where ``model`` computes: its pinned device (INT8: the CPU), else its first parameter's
    or buffer's device, else the CPU."""
    import torch

    info = getattr(model, "info", None)
    if info is not None and getattr(info, "pinned_device", None):
        return torch.device(info.pinned_device)
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def place(model, device):
    """``model`` moved to ``device``, unless it is pinned elsewhere (dynamic INT8 has no CUDA
    kernels: it stays on the CPU and its wrapper moves inputs in and logits back)."""
    if getattr(getattr(model, "info", None), "pinned_device", None):
        return model
    return model.to(device)


def set_training_device(device) -> None:
    """The device :func:`vitrobust.zoo.train.fit` trains on (None: the CPU). Process-wide
    because ``zoo.load_model`` takes no device; the engine and the CLI set it explicitly."""
    global _training_device
    _training_device = device


def training_device():
    import torch

    return torch.device(_training_device) if _training_device is not None else torch.device("cpu")


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


def halving(run: Callable[[int], object], batch_size: int,
            on_halve: Callable[[int, int], None] | None = None) -> tuple[object, int]:
    """``(run(batch), batch)``, halving ``batch`` and retrying on CUDA out-of-memory.

    ``on_halve(old, new)`` is told of each halving (the engine files a RunWarning). Out of
    memory at batch 1 is a DeviceError: nothing smaller can be tried.
    """
    batch = max(1, int(batch_size))
    while True:
        try:
            return run(batch), batch
        except Exception as exc:   # noqa: BLE001 - only CUDA OOM is handled, the rest re-raised
            if not is_out_of_memory(exc):
                raise
            if batch == 1:
                raise DeviceError("CUDA out of memory even at batch size 1; use a smaller model, "
                                  "smaller images or another device") from None
            _free_cuda_cache()
            if on_halve is not None:
                on_halve(batch, batch // 2)
            batch //= 2


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
