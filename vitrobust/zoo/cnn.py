"""A small CNN: the teacher for DeiT distillation and a non-ViT reference / substitute model."""
from __future__ import annotations

from torch import nn

from .registry import register_model

CNN_RECIPE = {"epochs": 15, "lr": 2e-3, "batch_size": 64, "weight_decay": 5e-4,
              "label_smoothing": 0.0, "warmup_epochs": 1, "seed": 0}


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(_block(3, width), _block(width, 2 * width),
                                      _block(2 * width, 4 * width))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(4 * width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


@register_model(family="cnn", recipe=CNN_RECIPE)
def cnn_small(num_classes: int = 10, **kwargs) -> SmallCNN:
    """Three conv-BN-ReLU-pool stages (32/64/128 channels): distillation teacher and substitute."""
    return SmallCNN(num_classes=num_classes)
