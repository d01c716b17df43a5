"""The model zoo: a registry of builders, training on first use, and an on-disk cache."""
from .build import CheckpointError, load_checkpoint, load_model
from .registry import UnknownModelError, list_models, model_entry, register_model
from .wrapper import ModelInfo, ModelWrapper

__all__ = ["CheckpointError", "ModelInfo", "ModelWrapper", "UnknownModelError", "list_models",
           "load_checkpoint", "load_model", "model_entry", "register_model"]
