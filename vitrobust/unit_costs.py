"""Measured per-image costs, from which the planner estimates what each unit of work takes.

Where every number comes from:

- ``PASS_SECONDS``: CPU seconds of one thread per image, for one forward pass (``forward``: what
  scoring an image costs) and one forward+backward pass to the input (``gradient``: one step of
  a white-box attack), measured by ``python bench/bench_unit_costs.py`` on the 2-core CI machine
  (torch 2.14.1, CPU, ``torch.set_num_threads(1)``, ``time.process_time``, best of 2; the
  machine was shared with other jobs, which is why CPU time and not wall time is measured). The
  default zoo at 32x32 (batches of 256, as the engine scores and attacks) and the paper's
  architectures at 224x224 with random weights (batches of 8; the cost does not depend on the
  weights). INT8 models have no gradient pass.
- ``ATTACK_PASSES``: how many of those passes an attack makes per image, measured by the same
  script as the attack's CPU seconds per image on ``deit_small`` (64 test images) divided by the
  pass it is made of (``gradient`` for white-box attacks, ``forward`` for black-box ones), so
  early exit and query counts are in it. A universal attack is counted per image of its fit
  split. Measured on the shipped specs' attacks; another configuration of a measured attack
  scales with its step count, and an attack never measured is estimated from its own step count.
- ``TRAIN_SECONDS`` / ``VARIANT_TRAIN_SECONDS``: wall seconds to train a default-zoo model on
  the 2-core machine. Measured (README, cold builds and the seed replicas): ``deit_base`` 213-332 s
  (270 here), a pruned ``deit_base`` about 130 s, the tiny models under 70 s. Not measured, set
  between those by size: ``deit_small`` 120 s and its variants 80 s, ``cnn_small`` 60 s, tiny
  variants 35 s. Rough, and only for the default zoo; ``:int8`` trains nothing.

An estimate is ``images x passes x seconds per pass``: one thread of this CPU. It assumes the
attack's early exit behaves as on ``deit_small`` and that costs add up over images (they do for
batched passes; a cold start is not counted). Models not in the table have no estimate (None),
except seed replicas (``deit_small@s1``), which cost what their replica 0 costs.
"""
from __future__ import annotations

from .names import ModelName

MEASURED_ON = "2-core CI machine, torch 2.14.1, CPU, one thread (bench/bench_unit_costs.py)"

# model -> (forward, gradient) CPU seconds per image, one thread; gradient None: no gradients.
# Best of two timings on a shared machine: single values are good to about +-20% (a pruned model
# at 0.5 is not really slower than at 0.6), enough to plan by.
PASS_SECONDS: dict[str, tuple[float, float | None]] = {
    # the default zoo, 32x32, batches of 256
    "cnn_small": (0.000889, 0.00159),
    "deit_tiny": (0.000634, 0.00185),
    "deit_tiny:advtrain": (0.000582, 0.00173),
    "deit_tiny:distilled": (0.000736, 0.00152),
    "deit_tiny:int8": (0.000558, None),
    "deit_tiny:mini": (0.000882, 0.00198),
    "deit_tiny:prune0.5": (0.000322, 0.000727),
    "deit_tiny:prune0.6": (0.000479, 0.00106),
    "deit_tiny:prune0.7": (0.000565, 0.00097),
    "deit_small": (0.00181, 0.00378),
    "deit_small:distilled": (0.00149, 0.00593),
    "deit_small:int8": (0.00195, None),
    "deit_small:mini": (0.002, 0.00457),
    "deit_small:prune0.5": (0.000756, 0.00178),
    "deit_small:prune0.6": (0.000966, 0.00232),
    "deit_small:prune0.7": (0.00125, 0.00256),
    "deit_base": (0.00328, 0.00835),
    "deit_base:distilled": (0.00388, 0.00886),
    "deit_base:int8": (0.00303, None),
    "deit_base:mini": (0.00428, 0.00788),
    "deit_base:prune0.5": (0.00154, 0.00351),
    "deit_base:prune0.6": (0.00196, 0.00435),
    "deit_base:prune0.7": (0.00207, 0.00585),
    # the paper's architectures, 224x224, batches of 8 (random weights)
    "deit_tiny_patch16_224": (0.0422, 0.0904),
    "deit_tiny_patch16_224:int8": (0.0309, None),
    "deit_tiny_patch16_224:prune0.7": (0.0265, 0.0673),
    "deit_tiny_patch16_224:prune0.6": (0.0269, 0.0637),
    "deit_tiny_patch16_224:prune0.5": (0.0208, 0.0511),
    "deit_tiny_patch16_224:mini": (0.0493, 0.104),
    "deit_small_patch16_224": (0.143, 0.336),
    "deit_small_patch16_224:int8": (0.0582, None),
    "deit_small_patch16_224:prune0.7": (0.0897, 0.172),
    "deit_small_patch16_224:prune0.6": (0.0696, 0.164),
    "deit_small_patch16_224:prune0.5": (0.0764, 0.161),
    "deit_small_patch16_224:mini": (0.162, 0.294),
    "deit_base_patch16_224": (0.483, 1.13),
    "deit_base_patch16_224:int8": (0.164, None),
    "deit_base_patch16_224:prune0.7": (0.362, 0.759),
    "deit_base_patch16_224:prune0.6": (0.258, 0.586),
    "deit_base_patch16_224:prune0.5": (0.244, 0.577),
    "deit_base_patch16_224:mini": (0.587, 1.25),
}

# (attack name, params as the spec gives them) -> (passes per image, "image" | "fit image",
# "forward" | "gradient"): the shipped specs' attacks, measured on deit_small (64 test images;
# the UAP fitted on the 250 val images). More passes than steps: an attack's batch of 64 images
# is slower per image than the 256 the pass was timed at, and projection and bookkeeping count.
ATTACK_PASSES: dict[tuple, tuple[float, str, str]] = {
    ("fgsm", (("eps", 2 / 255),)): (1.2, "image", "gradient"),
    ("pgd", (("eps", 2 / 255), ("steps", 10))): (9.75, "image", "gradient"),
    ("pgd", (("eps", 4 / 255), ("steps", 10))): (7.8, "image", "gradient"),   # more images fall early
    ("pgd", (("early_stop", False), ("eps", 8 / 255), ("steps", 10))): (13.6, "image", "gradient"),
    ("mifgsm", (("early_stop", False), ("eps", 8 / 255), ("steps", 10))): (12.9, "image", "gradient"),
    ("uap_pgd", (("eps", 8 / 255),)): (13.5, "fit image", "gradient"),
    ("salt_and_pepper", (("eps", 1.5), ("norm", "l2"), ("steps", 100))): (125.0, "image", "forward"),
    ("blended_noise", (("directions", 100), ("eps", 8 / 255), ("norm", "linf"), ("steps", 50))):
        (62.7, "image", "forward"),
    ("square", (("eps", 2 / 255), ("n_queries", 200))): (218.0, "image", "forward"),
    ("spatial", (("max_rotation", 15), ("max_translation", 2))): (140.0, "image", "forward"),
}

# parameters an attack's work grows with (its passes scale by their product's ratio)
STEP_PARAMS = ("steps", "n_queries", "directions", "epochs", "passes", "restarts")

TRAIN_SECONDS = {"deit_tiny": 70.0, "deit_small": 120.0, "deit_base": 270.0, "cnn_small": 60.0}
VARIANT_TRAIN_SECONDS = {"deit_tiny": 35.0, "deit_small": 80.0, "deit_base": 130.0, "cnn_small": 30.0}


def _pass(name: str, which: int) -> float | None:
    name = ModelName(name)
    for candidate in (name, name.replica(0)):
        if str(candidate) in PASS_SECONDS:
            return PASS_SECONDS[str(candidate)][which]
    return None


def forward(name: str) -> float | None:
    """CPU seconds of one forward pass of ``name`` per image (None: not measured)."""
    return _pass(name, 0)


def gradient(name: str) -> float | None:
    """CPU seconds of one forward+backward pass to the input, per image (None: not measured or
    no gradients)."""
    return _pass(name, 1)


def attack_passes(name: str, params: dict) -> tuple[float, str, str]:
    """``(passes per image, per "image" or "fit image", "forward" or "gradient")`` of an attack."""
    params = dict(params)
    for (measured, measured_params), value in ATTACK_PASSES.items():
        if measured == name and dict(measured_params) == params:
            return value
    steps = _steps(params)
    for (measured, measured_params), (passes, per, kind) in ATTACK_PASSES.items():
        if measured == name:   # the same attack, another configuration: scale by its steps
            return passes * steps / _steps(dict(measured_params)), per, kind
    from .attacks import attack_class   # never measured: its own steps, a pass each

    cls = attack_class(name)
    return float(steps), ("fit image" if cls.universal else "image"), ("gradient" if cls.needs_grad else "forward")


def _steps(params: dict) -> float:
    product = 1.0
    for key in STEP_PARAMS:
        if isinstance(params.get(key), (int, float)) and not isinstance(params.get(key), bool):
            product *= max(float(params[key]), 1.0)
    return product


def attack(config, source: str, strategy: str, images: int | None, fit_images: int | None) -> float | None:
    """Estimated CPU seconds to make one adversarial set: ``config`` (an AttackConfig) on
    ``source`` with the strategy the engine resolved (``white-box``, ``straight-through``,
    ``transfer:<model>``, ...) over ``images`` (a universal attack: ``fit_images``)."""
    passes, per, kind = attack_passes(config.name, dict(config.params))
    attacked = strategy.split(":", 1)[1] if strategy.startswith("transfer:") else source
    if strategy == "straight-through":   # the model's forward, its parent's gradient
        parent = ModelName(source).parent
        fwd, grad = forward(source), gradient(str(parent)) if parent else None
        seconds = None if fwd is None or grad is None else fwd + grad
    else:
        seconds = gradient(attacked) if kind == "gradient" else forward(attacked)
    n = fit_images if per == "fit image" else images
    return None if seconds is None or n is None else n * passes * seconds


def training(name: str) -> float | None:
    """Rough wall seconds to train a default-zoo model on the 2-core machine (None: unknown)."""
    name = ModelName(name)
    table = VARIANT_TRAIN_SECONDS if name.suffixes else TRAIN_SECONDS
    if name.suffixes and name.last_suffix == "int8":
        return 0.0
    return table.get(name.base)
