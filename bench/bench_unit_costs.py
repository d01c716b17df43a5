"""Measure the per-image costs the planner's estimates come from (vitrobust/unit_costs.py).

    python bench/bench_unit_costs.py > /tmp/costs.json

Costs are CPU seconds of one thread (``torch.set_num_threads(1)``, ``time.process_time``): the
2-core machine is shared with other jobs, and wall time there measures the load, not the work.

1. Seconds per image of one forward pass (scoring) and of one forward+backward pass (an input
   gradient: what a white-box attack step costs), for every model the shipped specs name on the
   default zoo (32x32, the engine's batches: 256 scoring, 256 attacking) and for the paper's
   architectures at 224x224 (random weights: the cost does not depend on them; batches of 8). Best of ``ROUNDS`` timings.
2. Passes per image of every attack the shipped specs declare: the attack's seconds per image on
   ``deit_small`` (``IMAGES`` test images; a UAP is fitted on the val split and counted per fit
   image) divided by the pass it is made of (forward+backward for gradient attacks, forward for
   black-box ones). Early exit and query counts are in that number.

Prints JSON. The numbers in vitrobust/unit_costs.py are this script's output on the 2-core CI
machine (torch 2.14.1, CPU).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitrobust.adversarial import AttackConfig  # noqa: E402
from vitrobust.attacks.base import input_gradient  # noqa: E402
from vitrobust.data import load_dataset  # noqa: E402
from vitrobust.spec import load_specs  # noqa: E402
from vitrobust.zoo import load_model  # noqa: E402

ROUNDS = 2
IMAGES = 64
ARCH_224 = ["deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"]
VARIANTS_224 = ["", ":int8", ":prune0.7", ":prune0.6", ":prune0.5", ":mini"]


def best(fn, rounds: int = ROUNDS) -> float:
    """The least CPU time of ``rounds`` calls (one thread: CPU time is the work done)."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def pass_seconds(model, images, labels, score_batch: int, grad_batch: int) -> dict:
    n = len(images)
    with torch.inference_mode():
        model.predict(images[:score_batch], score_batch)   # warm-up
        forward = best(lambda: model.predict(images, score_batch)) / n
    out = {"forward": forward}
    if model.info.differentiable:
        def grads():
            for x, y in zip(images.split(grad_batch), labels.split(grad_batch)):
                input_gradient(model, x, y)
        grads()
        out["forward_backward"] = best(grads) / n
    return out


def main() -> None:
    torch.set_num_threads(1)
    names: set[str] = set()
    specs = load_specs(ROOT / "specs", known_models=lambda name: names.add(str(name)) is None)
    test = load_dataset("digits", "test", limit=256)
    costs = {"models": {}, "attacks": {}}
    for name in sorted(names):
        model = load_model(name, progress=False)
        costs["models"][name] = pass_seconds(model, test.images, test.labels, 256, 256)
        print(name, costs["models"][name], file=sys.stderr)
    big = torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    big_labels = torch.zeros(8, dtype=torch.long)
    for arch in ARCH_224:
        for variant in VARIANTS_224:
            name = arch + variant
            model = load_model(name, random_weights=True, progress=False)
            costs["models"][name] = pass_seconds(model, big, big_labels, 8, 8)
            print(name, costs["models"][name], file=sys.stderr)

    small = load_model("deit_small", progress=False)
    sample = load_dataset("digits", "test", limit=IMAGES)
    val = load_dataset("digits", "val")
    per_pass = costs["models"]["deit_small"]
    seen = {}
    for spec in specs:
        for alias, entry in spec.attacks.items():
            config = AttackConfig.from_spec(entry)
            if config in seen:
                continue
            attack = config.build()
            if attack.universal:
                seconds = best(lambda: attack.fit_eval(small, val, sample), 1) / len(val)
                unit = "fit image"
            else:
                seconds = best(lambda: attack(small, sample.images, sample.labels), 1) / IMAGES
                unit = "image"
            kind = "forward_backward" if attack.needs_grad else "forward"
            key = f"{spec.id}.{alias}"
            seen[config] = key
            costs["attacks"][key] = {"name": config.name, "params": dict(config.params), "per": unit,
                                     "pass": kind, "seconds": seconds, "passes": seconds / per_pass[kind]}
            print(key, costs["attacks"][key], file=sys.stderr)
    costs["threads"] = torch.get_num_threads()
    costs["torch"] = torch.__version__
    print(json.dumps(costs, indent=1, default=str))


if __name__ == "__main__":
    main()
