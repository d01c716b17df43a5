"""The training loop every trained model of the zoo shares (base models and compressed variants).

Compressions plug in through ``loss_fn(model, images, labels) -> loss``: distillation, the
DynamicViT keep-ratio loss and PGD adversarial training are all just losses here.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import Dataset
from .wrapper import ModelWrapper

LossFn = Callable[[ModelWrapper, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    def loss(model, images, labels):
        return F.cross_entropy(model(images), labels, label_smoothing=label_smoothing)
    return loss


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (zero fill), the whole batch in one gather."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).view(n, 1, h, 1).expand(n, 3, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None]).view(n, 1, 1, w).expand(n, 3, h, w)
    return out.gather(3, cols)


def fit(model: ModelWrapper, train: Dataset, recipe: dict, *, loss_fn: LossFn | None = None,
        params=None, desc: str = "train", progress: bool = True) -> float:
    """Train ``model`` in place with AdamW and a warmup-cosine schedule; return the last loss."""
    epochs = int(recipe.get("epochs", 10))
    batch_size = int(recipe.get("batch_size", 64))
    warmup = float(recipe.get("warmup_epochs", 0))
    generator = torch.Generator().manual_seed(int(recipe.get("seed", 0)))
    torch.manual_seed(int(recipe.get("seed", 0)))
    loss_fn = loss_fn or cross_entropy_loss(float(recipe.get("label_smoothing", 0.0)))
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(recipe.get("lr", 1e-3)),
                                  weight_decay=float(recipe.get("weight_decay", 0.0)))
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = max(1, epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        warm = warmup * steps_per_epoch
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    last = float("nan")
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
    for _ in bar:
        order = torch.randperm(len(train), generator=generator)
        for batch in order.split(batch_size):
            images = train.images[batch]
            if recipe.get("augment", True):
                images = augment(images, generator)
            loss = loss_fn(model, images, train.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            last = loss.item()
        bar.set_postfix(loss=f"{last:.3f}")
    model.eval()
    return last
