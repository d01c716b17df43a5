"""Benchmark (not a test): how fast is our PGD, and how does it compare?

On the default zoo's deit_small and a fixed batch of test images:

(a) efficiency: steps x (one forward + backward on the batch) / our PGD's wall time with early
    exit off. 1.0 means zero overhead beyond the gradient computations (target >= 0.85).
(b) our PGD (early exit on and off) vs foolbox LinfPGD vs torchattacks PGD at the same eps,
    steps, step size and random start: wall time, ASR, and speed ratios (target: >= 1.5x
    faster than torchattacks at equal or higher ASR, with early exit on).

torchattacks is a benchmark-only dependency (``pip install torchattacks``); the library never
imports it. Timings are the minimum over ``--repeats`` runs (the machine may be shared).

    VITROBUST_CACHE=/tmp/vrcache python bench/bench_pgd.py [--images 256] [--eps 4] [--steps 10]
"""
from __future__ import annotations

import argparse
import time

import torch
from tabulate import tabulate

from vitrobust.attacks import make_attack
from vitrobust.attacks.base import input_gradient
from vitrobust.data import load_dataset
from vitrobust.zoo import load_model


def asr(model, clean_ok, adv, labels):
    fooled = model.predict(adv) != labels
    return (fooled & clean_ok).sum().item() / max(1, clean_ok.sum().item())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deit_small")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--eps", type=float, default=4.0, help="L-inf budget in 1/255 units")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-random-start", action="store_true",
                        help="start every PGD at the clean image (identical trajectories)")
    args = parser.parse_args()

    model = load_model(args.model, progress=False).eval()
    data = load_dataset("digits", "test", limit=args.images)
    x, y = data.images, data.labels
    eps = args.eps / 255
    step = 2.5 * eps / args.steps
    clean_ok = model.predict(x) == y
    random = not args.no_random_start
    print(f"{args.model}, {len(x)} test images, clean acc {clean_ok.float().mean():.3f}, "
          f"L-inf eps {args.eps:g}/255, {args.steps} steps, step {2.5 * args.eps / args.steps:g}/255, "
          f"random start {random}, torch threads {torch.get_num_threads()}")

    def gradient_only():
        for _ in range(args.steps):
            input_gradient(model, x, y)

    import foolbox
    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1))
    fb = foolbox.attacks.LinfPGD(steps=args.steps, abs_stepsize=step, random_start=random)
    kw = dict(eps=eps, steps=args.steps, step_size=step, random_start=random, seed=0)
    runs = {
        "vitrobust pgd (early exit off)": lambda a=make_attack("pgd", early_stop=False, **kw): a(model, x, y),
        "vitrobust pgd (early exit on)": lambda a=make_attack("pgd", early_stop=True, **kw): a(model, x, y),
        "foolbox LinfPGD": lambda: fb(fmodel, x, y, epsilons=eps)[1],
    }
    try:
        import torchattacks
    except ImportError:
        print("torchattacks not installed: pip install torchattacks (bench only)")
    else:
        ta = torchattacks.PGD(model, eps=eps, alpha=step, steps=args.steps, random_start=random)
        runs["torchattacks PGD"] = lambda: ta(x, y)

    # Interleaved rounds, minimum per method: a shared machine's load drifts over minutes.
    times = {k: float("inf") for k in ["gradient only", *runs]}
    advs = {}
    for _ in range(args.repeats):
        for label, fn in [("gradient only", gradient_only), *runs.items()]:
            start = time.perf_counter()
            out = fn()
            times[label] = min(times[label], time.perf_counter() - start)
            if out is not None:
                advs[label] = out
    t_grad = times["gradient only"]
    rows = [[label, times[label], asr(model, clean_ok, advs[label], y)] for label in runs]
    on = times["vitrobust pgd (early exit on)"]
    for row in rows:
        row.append(times[row[0]] / on)
    print(tabulate(rows, headers=["attack", "wall s (min)", "ASR", "time / ours(early exit)"],
                  floatfmt=".3f"))
    print(f"\n(a) {args.steps} x forward+backward = {t_grad:.3f} s; ours (early exit off) = "
          f"{times['vitrobust pgd (early exit off)']:.3f} s; efficiency = "
          f"{t_grad / times['vitrobust pgd (early exit off)']:.2f} (target >= 0.85)")
    if "torchattacks PGD" in times:
        print(f"(b) speed-up vs torchattacks: {times['torchattacks PGD'] / on:.2f}x with early exit "
              f"(target >= 1.5x), {times['torchattacks PGD'] / times['vitrobust pgd (early exit off)']:.2f}x without; "
              f"vs foolbox: {times['foolbox LinfPGD'] / on:.2f}x")


if __name__ == "__main__":
    main()
