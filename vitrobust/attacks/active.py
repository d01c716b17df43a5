"""Early exit for iterative attacks (as in AutoAttack): fooled images leave the active batch.

An image whose current adversarial input already fools the model is written to the output and
no longer attacked; it keeps that (best-so-far) input. This costs nothing extra: the check uses
the logits of the forward pass the attack makes anyway. Consequence worth knowing: with early
exit, an image's adversarial input stops changing once it fools the *source* model, so transfer
ASR is computed from those just-over-the-boundary inputs (usually less transferable than
inputs pushed further). Set ``early_stop=False`` to run every step on every image.
"""
from __future__ import annotations

import torch


class ActiveBatch:
    """The images still under attack, their per-image state, and the output buffer."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, **state: torch.Tensor):
        self.out = images.detach().clone()
        self.index = torch.arange(len(images), device=images.device)
        self.images, self.labels = images, labels
        self.state = dict(state)

    def __len__(self) -> int:
        return len(self.index)

    def retire(self, fooled: torch.Tensor, current: torch.Tensor) -> None:
        """Freeze the images flagged ``fooled`` at their ``current`` input; drop them from the batch."""
        if not bool(fooled.any()):
            return
        self.out[self.index[fooled]] = current[fooled].detach()
        keep = ~fooled
        self.index, self.images, self.labels = self.index[keep], self.images[keep], self.labels[keep]
        self.state = {k: v[keep] for k, v in self.state.items()}

    def finish(self, current: torch.Tensor) -> torch.Tensor:
        """Write the still-active images' final inputs and return the whole batch's output."""
        if len(self.index):
            self.out[self.index] = current.detach()
        return self.out
