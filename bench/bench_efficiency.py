"""Benchmark (not a test): each compression's speed, FLOPs and size against its dense model.

Every variant of one architecture is timed side by side with the dense model in the same run
(``metrics.throughput_side_by_side``: alternating rounds, best of each), so the printed speedups
compare models under the same load. The default is the paper's DeiT-S at 224x224 with random
weights: speed does not depend on the weights (DynamicViT keeps a fixed number of tokens per
stage), and nothing is trained or downloaded. ``--arch deit_small`` uses the trained default zoo.

    python bench/bench_efficiency.py [--arch deit_small_patch16_224] [--rounds 3]
"""
from __future__ import annotations

import argparse

from tabulate import tabulate

from vitrobust import metrics
from vitrobust.zoo import load_model

VARIANTS = ("", ":int8", ":prune0.7", ":prune0.6", ":prune0.5", ":mini")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="deit_small_patch16_224")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    names = [args.arch + suffix for suffix in VARIANTS]
    models = [load_model(name, progress=False, random_weights=True) for name in names]
    speeds = metrics.throughput_side_by_side(models, rounds=args.rounds)
    dense = models[0]
    dense_gflops, dense_mb = metrics.gflops(dense), metrics.size_mb(dense)
    rows = []
    for name, model, speed in zip(names, models, speeds):
        gflops, size = metrics.gflops(model), metrics.size_mb(model)
        rows.append([name, f"{gflops:.3g}", f"{gflops / dense_gflops:.2f}", f"{size:.1f}",
                     f"{size / dense_mb:.2f}", f"{speed:.1f}", f"{speed / speeds[0]:.2f}x"])
    batch = metrics.default_batch_size(dense.info.input_size)
    print(f"{args.arch} at {dense.info.input_size}x{dense.info.input_size}, batch {batch}, "
          f"{args.rounds} alternating rounds (best of each)")
    print(tabulate(rows, headers=["model", "GFLOPs", "vs dense", "size MB", "vs dense",
                                  "img/s", "speedup"]))


if __name__ == "__main__":
    main()
