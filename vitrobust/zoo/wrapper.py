"""The one way every model is called: pixels in [0, 1] -> one (N, C) logit tensor."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class ModelInfo:
    """What the zoo knows about a built model: where it came from and how it may be attacked."""

    name: str
    family: str = "vit"
    differentiable: bool = True        # False for INT8: gradient attacks must not be asked of it
    data: str | None = None            # the data source it was trained on (None: random weights)
    input_size: int = 32
    num_classes: int = 10
    meta: dict = field(default_factory=dict)   # compression metadata: bits, keep_rate, sharing...
    recipe: dict = field(default_factory=dict)  # the base's training recipe ('variant_epochs' caps variants)
    weight_hash: str = ""
    build_seconds: float = 0.0
    # The model whose gradients stand in for this one's (``deit_tiny:int8`` -> ``deit_tiny``):
    # what the ``straight-through`` and bare ``transfer`` strategies attack. Declared by the
    # compression that built it (``register_compression(..., surrogate="parent")``); None: none.
    surrogate: str | None = None
    # The device this model must compute on whatever the run's device ("cpu" for dynamic INT8,
    # which has no CUDA kernels); None: it goes where the run goes (vitrobust.device.place).
    pinned_device: str | None = None


class ModelWrapper(nn.Module):
    """Owns the model's input normalization and merges multi-head outputs.

    Distilled DeiT returns (class-head, distillation-head) logits while training; at evaluation
    they are averaged here, so attacks always see a single (N, C) tensor.

    Inputs on another device than the model's (its normalization buffers say where it lives)
    are moved in and the logits moved back: that is how a CPU-pinned INT8 model serves an attack
    running on CUDA, and how a teacher left on the CPU serves a student trained on CUDA. Both
    moves are differentiable. On one device nothing moves and nothing changes.
    """

    def __init__(self, net: nn.Module, info: ModelInfo, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.net = net
        self.info = info
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1))

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` as tuples, so a derived model is built with the same input mapping:
        ``ModelWrapper(net, info, *base.normalization)``."""
        return tuple(self.mean.flatten().tolist()), tuple(self.std.flatten().tolist())

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> what ``net`` takes (losses that call the net directly use it)."""
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of pixels in [0, 1], or of uint8 pixels (decoded images: converted here, one
        batch at a time, so a data set can stay uint8 in host memory)."""
        home = self.mean.device
        if images.device != home:
            return self._logits(images.to(home)).to(images.device)
        return self._logits(images)

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        out = self.net(self.normalize(images))
        if isinstance(out, (tuple, list)):
            out = sum(out) / len(out)
        return out

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Predicted labels, batched, without gradients."""
        self.eval()
        return torch.cat([self(chunk).argmax(1) for chunk in images.split(batch_size)])
