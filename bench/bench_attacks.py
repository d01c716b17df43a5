"""Benchmark (not a test): what each black-box attack costs, plain and with the queries that
cannot change its result left out.

Every black-box attack the shipped specs configure (each distinct ``attacks:`` entry of
``specs/`` whose attack needs no gradients, with that entry's parameters) is run on each model
both ways on the same images: plain (``fast = False``: foolbox itself for salt-and-pepper, blended
noise and Spatial; Square querying every candidate) and as the suite runs it (``fast``, the
default). Printed per attack and model, for each path: seconds per image, model forward calls
and images forwarded per image (counted by a forward hook on the model), and ASR (fooled among
the images the model gets right clean, :func:`vitrobust.metrics.attack_success`); then the
images whose adversarial input differs bitwise between the two paths and those whose outcome
(fooled or not) differs: both 0 when the fast path finds exactly what the plain one finds.
Times are the best of ``--rounds`` alternating runs; on a shared machine the forward counts
are the stable measure. Uses the trained default zoo (cache or checkpoints).

    python bench/bench_attacks.py [--arch deit_tiny deit_tiny:int8] [--images 128] [--attacks sp spatial ...]
                                  [--rounds 1] [--threads N]
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from tabulate import tabulate

from vitrobust.attacks import attack_class, make_attack
from vitrobust.data import load_dataset
from vitrobust.defaults import DATA_SOURCE
from vitrobust.metrics import attack_success, correct
from vitrobust.spec import load_specs
from vitrobust.zoo import load_model

SPECS = Path(__file__).resolve().parents[1] / "specs"


def spec_attacks(wanted: list[str] | None) -> list[tuple[str, dict]]:
    """``(label, params)`` of each distinct black-box attack of the shipped specs; ``wanted``
    keeps those whose registry name or spec alias is listed."""
    found = {}
    for spec in load_specs(SPECS):
        for alias, entry in spec.attacks.items():
            params = {k: v for k, v in entry.items() if k not in ("name", "strategy")}
            if attack_class(entry["name"]).needs_grad or entry.get("strategy") not in (None, "black-box"):
                continue
            if wanted and entry["name"] not in wanted and alias not in wanted:
                continue
            key = (entry["name"], tuple(sorted(params.items())))
            found.setdefault(key, f"{spec.id}.{alias}")
    return [(label, {"name": name, **dict(params)}) for (name, params), label in found.items()]


class Counter:
    """Forward calls and images forwarded, through a forward pre-hook on the model."""

    def __init__(self, model):
        self.calls = self.images = 0
        model.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1
        self.images += len(args[0])


def run(attack, fast: bool, model, counter: Counter, images, labels) -> dict:
    attack = copy.copy(attack)
    attack.fast = fast
    counter.calls = counter.images = 0
    start = time.perf_counter()
    adv = attack(model, images, labels)
    seconds = time.perf_counter() - start
    calls, forwarded = counter.calls, counter.images
    return {"adv": adv, "seconds": seconds, "calls": calls, "forwarded": forwarded,
            "adv_correct": correct(model, adv, labels)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["deit_tiny", "deit_tiny:int8"],
                        help="zoo model names (a compression suffix such as :int8 allowed)")
    parser.add_argument("--images", type=int, default=128, help="images of the default test split")
    parser.add_argument("--attacks", nargs="+", help="registry names or spec aliases (default: all black-box)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs of both paths (best time kept)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset(DATA_SOURCE, "test", limit=args.images)
    images, labels, n = data.images, data.labels, len(data.labels)
    configs = spec_attacks(args.attacks)
    rows = []
    for arch in args.arch:
        model = load_model(arch, progress=False).eval()
        clean = correct(model, images, labels)
        counter = Counter(model)
        for label, entry in configs:
            attack = make_attack(entry["name"], **{k: v for k, v in entry.items() if k != "name"})
            plain, fast = (run(attack, flag, model, counter, images, labels) for flag in (False, True))
            for _ in range(args.rounds - 1):    # alternating rounds: keep the best time of each
                for result, flag in ((plain, False), (fast, True)):
                    again = run(attack, flag, model, counter, images, labels)
                    result["seconds"] = min(result["seconds"], again["seconds"])
            asr = [attack_success(clean, r["adv_correct"]).value for r in (plain, fast)]
            differing = int((plain["adv"] != fast["adv"]).flatten(1).any(1).sum())
            outcome = int((plain["adv_correct"] != fast["adv_correct"]).sum())
            rows.append([arch, label,
                         f"{plain['seconds'] / n:.3f}", f"{fast['seconds'] / n:.3f}",
                         f"{plain['seconds'] / fast['seconds']:.1f}x",
                         f"{plain['calls'] / n:.2f}", f"{fast['calls'] / n:.2f}",
                         f"{plain['forwarded'] / n:.1f}", f"{fast['forwarded'] / n:.1f}",
                         f"{asr[0]:.3f}", f"{asr[1]:.3f}", differing, outcome])
    print(f"{n} {DATA_SOURCE} test images, {torch.get_num_threads()} threads, best of {args.rounds} round(s); "
          f"per image: seconds, forward calls, images forwarded; plain = fast=False (foolbox itself / "
          f"every Square candidate)")
    print(tabulate(rows, headers=["model", "attack", "s plain", "s fast", "speed-up", "calls plain",
                                  "calls fast", "fwd plain", "fwd fast", "ASR plain", "ASR fast",
                                  "differing advs", "differing outcomes"]))


if __name__ == "__main__":
    main()
