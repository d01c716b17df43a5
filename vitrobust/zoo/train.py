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

from .. import faults
from ..data import Dataset
from ..device import home_device, place, training_device
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
    # shifts come from the (CPU) generator in the same order on every device, then move
    where = generator.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=where)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=where)
    rows = (dy[:, None] + torch.arange(h, device=where)[None]).view(n, 1, h, 1)
    out = padded.gather(2, rows.to(images.device).expand(n, 3, h, w + 2 * pad))
    cols = (dx[:, None] + torch.arange(w, device=where)[None]).view(n, 1, 1, w)
    return out.gather(3, cols.to(images.device).expand(n, 3, h, w))


def _param_groups(model: ModelWrapper, params) -> list:
    """``params`` as AdamW param groups, trainable tensors only (see :func:`fit`)."""
    params = list(params if params is not None else model.parameters())
    if not any(isinstance(g, dict) for g in params):
        return [{"params": [p for p in params if p.requires_grad]}]
    if not all(isinstance(g, dict) for g in params):
        raise ValueError("fit params: mix of tensors and param-group dicts")
    groups = []
    for group in params:
        tensors = group["params"]
        tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
        tensors = [p for p in tensors if p.requires_grad]
        if tensors:
            groups.append({**group, "params": tensors})
    return groups


def fit(model: ModelWrapper, train: Dataset, recipe: dict, *, loss_fn: LossFn | None = None,
        params=None, desc: str = "train", progress: bool = True, device=None,
        companions: tuple = ()) -> float:
    """Train ``model`` in place with AdamW and a warmup-cosine schedule; return the last loss.

    ``params``: ``None`` (all of ``model``'s parameters), an iterable of tensors (all at
    ``recipe["lr"]``), or a list of torch param-group dicts (``{"params": [...], "lr": ...}``);
    a group without its own ``lr`` uses ``recipe["lr"]``. Every group's lr follows the same
    warmup-cosine schedule (LambdaLR scales each group's initial lr). Parameters that do not
    require grad are dropped, and groups left empty with them.

    Training runs on ``device``, by default :func:`vitrobust.device.training_device` (the run's
    device, set by the engine and the CLI because ``zoo.load_model`` takes none). The model and
    its ``companions`` (teachers a loss calls) are moved there and back to where they were, so
    the weights cached and hashed afterwards are where the zoo keeps them. Batches are drawn
    from the same CPU generator on every device: the order and the shifts do not depend on it.
    """
    device = torch.device(device) if device is not None else training_device()
    moved = [(m, home_device(m)) for m in (model, *companions)]
    for module, _ in moved:
        place(module, device)
    try:
        return _fit(model, train, recipe, loss_fn, params, desc, progress, device)
    finally:
        for module, home in moved:
            place(module, home)


def _fit(model, train, recipe, loss_fn, params, desc, progress, device) -> float:
    epochs = int(recipe.get("epochs", 10))
    batch_size = int(recipe.get("batch_size", 64))
    warmup = float(recipe.get("warmup_epochs", 0))
    generator = torch.Generator(device="cpu").manual_seed(int(recipe.get("seed", 0)))
    torch.manual_seed(int(recipe.get("seed", 0)))
    loss_fn = loss_fn or cross_entropy_loss(float(recipe.get("label_smoothing", 0.0)))
    optimizer = torch.optim.AdamW(_param_groups(model, params), lr=float(recipe.get("lr", 1e-3)),
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
        order = torch.randperm(len(train), generator=generator, device="cpu")
        for images, labels in train.batches(order, batch_size):
            images = images.to(device)
            if recipe.get("augment", True):
                images = augment(images, generator)
            loss = loss_fn(model, images, labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            last = loss.item()
        faults.point("train-epoch")
        bar.set_postfix(loss=f"{last:.3f}")
    # Leave no .grad behind: a trained model (e.g. a teacher) must look untouched to callers.
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return last
