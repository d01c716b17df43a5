"""Benchmark (not a test): ``:int8`` scored in batches against one image per call.

For each default-zoo size, the default test split is scored by torch's dynamic-INT8 net called
on one image at a time (how ``:int8`` models were scored before, and the reference), and by the
same weights with per-image exact linears (:mod:`vitrobust.compress.int8_exact`, how they are
scored now) in batches. Printed: milliseconds per image of each and the speed-up, the images
whose prediction differs and the largest logit difference (both 0 when the batched path is
exact), and whether the weight hash is unchanged. For scale, torch's own kernel on the same
batches (fast, but one activation scale per batch: not what is scored) is timed too: no batched
path can do much better than it. Times are the best of ``--rounds`` alternating rounds. Uses
the trained default zoo (cache or checkpoints).

    python bench/bench_int8.py [--arch deit_tiny deit_small deit_base] [--batch 64] [--rounds 1] [--threads N]
"""
from __future__ import annotations

import argparse
import time

import torch
from tabulate import tabulate

from vitrobust.compress.quantize import BatchInvariant, int8_state_hash, quantize_net
from vitrobust.data import load_dataset
from vitrobust.defaults import DATA_SOURCE, IMAGE_LIMIT
from vitrobust.zoo import load_model


def _timed(net, x: torch.Tensor, batch: int) -> tuple[torch.Tensor, float]:
    """Logits of ``net`` on ``x`` in batches of ``batch``, and the seconds taken."""
    start = time.perf_counter()
    with torch.no_grad():
        out = torch.cat([net(chunk) for chunk in x.split(batch)])
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["deit_tiny", "deit_small", "deit_base"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    images = load_dataset(DATA_SOURCE, "test", limit=IMAGE_LIMIT).images
    rows = []
    for arch in args.arch:
        model = load_model(arch + ":int8", progress=False)
        assert model.net.exact, "torch's INT8 kernel here is not fbgemm: nothing to compare"
        torch_net = quantize_net(load_model(arch, progress=False).net)
        per_call = BatchInvariant(torch_net, exact=False)
        x = model.normalize(images)
        model.net(x[:args.batch])                      # warm-up (first-call allocations)
        best = {"call": float("inf"), "exact": float("inf"), "mixed": float("inf")}
        for _ in range(args.rounds):
            for key, net, batch in (("call", per_call, 1), ("exact", model.net, args.batch),
                                    ("mixed", torch_net, args.batch)):
                out, seconds = _timed(net, x, batch)
                best[key] = min(best[key], seconds)
                if key == "call":
                    ref = out
                elif key == "exact":
                    exact = out
        differing = int((exact.argmax(1) != ref.argmax(1)).sum())
        same_hash = int8_state_hash(per_call.state_dict()) == model.info.weight_hash
        ms = {key: f"{1e3 * seconds / len(x):.2f}" for key, seconds in best.items()}
        rows.append([arch, ms["call"], ms["exact"], f"{best['call'] / best['exact']:.1f}x", differing,
                     f"{(exact - ref).abs().max().item():.3g}", "yes" if same_hash else "NO", ms["mixed"]])
    print(f"{len(images)} {DATA_SOURCE} test images, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"{args.rounds} alternating round(s) (best of each)")
    print(tabulate(rows, headers=["model", "ms/img per call", f"batch {args.batch} exact", "speed-up",
                                  "differing preds", "max |logit diff|", "same weight hash",
                                  "torch batched (mixes)"]))


if __name__ == "__main__":
    main()
