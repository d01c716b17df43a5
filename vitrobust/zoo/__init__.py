"""The model zoo: a registry of builders, training on first use, and an on-disk cache."""
from .build import RANDOM_WEIGHTS, load_model
from .checkpoints import CheckpointError, ClassCountError, check_class_count, load_checkpoint
from .registry import UnknownModelError, list_models, model_entry, register_model
from .variant import UntrainedVariantError
from .wrapper import ModelInfo, ModelWrapper

__all__ = ["CheckpointError", "ClassCountError", "ModelInfo", "ModelWrapper", "RANDOM_WEIGHTS",
           "UnknownModelError", "UntrainedVariantError", "check_class_count", "list_models",
           "load_checkpoint", "load_model", "model_entry", "register_model"]
