"""Benchmark (not a test): ``:int8`` scored in batches against one image per call.

For each default-zoo size, the default test split is scored by torch's dynamic-INT8 net called
on one image at a time (how ``:int8`` models were scored before, and the reference), and by the
same weights with per-image exact linears (:mod:`vitrobust.compress.int8_exact`, how they are
scored now) in batches, with the integer GEMM this CPU picks (int8 with VNNI, else float32)
and with the other one. Printed: milliseconds per image of each and the speed-up, the images
whose prediction differs and the largest logit difference (both 0 when the batched path is
exact), and whether the weight hash is unchanged.

For scale, on the same batches: torch's own INT8 kernel (fast, but one activation scale per
batch: not what is scored), the FP32 parent, and the exact net with its INT8 linears free (they
return outputs recorded beforehand: the attention, LayerNorms, GELUs and the rest, which both
paths run in FP32). No batched exact path can beat that floor, so ``per call / floor`` is the
speed-up's ceiling; one call per image with free linears splits the per-call time the same way.
Times (see :func:`_table`) by ``--clock``: wall, or the process's CPU time, which other processes
on a shared machine disturb less. One table per ``--threads`` count. Uses the trained default
zoo (cache or checkpoints).

    python bench/bench_int8.py [--arch deit_tiny deit_small deit_base] [--batch 64] [--rounds 3]
                               [--threads 1 2] [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.ao.nn.quantized.dynamic as nnqd
from tabulate import tabulate

from vitrobust.compress import int8_exact
from vitrobust.compress.quantize import BatchInvariant, int8_state_hash, quantize_net
from vitrobust.data import load_dataset
from vitrobust.defaults import DATA_SOURCE, IMAGE_LIMIT
from vitrobust.zoo import load_model


def _timed(net, x: torch.Tensor, batch: int, clock) -> tuple[torch.Tensor, float]:
    """Logits of ``net`` on ``x`` in batches of ``batch``, and the seconds taken."""
    start = clock()
    with torch.no_grad():
        out = torch.cat([net(chunk) for chunk in x.split(batch)])
    return out, clock() - start


class _OtherGemm:
    """The exact net computing its integer products with the GEMM this CPU does not pick
    (:func:`int8_exact.int8_gemm_is_fast`): both are exact, so only the time may differ."""

    def __init__(self, net):
        self.net, self.chosen = net, int8_exact.int8_gemm_is_fast()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with int8_exact.forced_product(not self.chosen):
            return self.net(x)


class _Replay:
    """A linear's forward that computes once (the first call), then returns that output's first
    ``len(x)`` images: the net around it runs on realistic values at no cost of its own."""

    def __init__(self, forward):
        self.forward, self.output = forward, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.output is None:
            self.output = self.forward(x)
        return self.output[:len(x)]


def _linears_free(net: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """A copy of ``net`` whose INT8 linears replay their outputs on ``x`` (a full batch)."""
    free = copy.deepcopy(net)
    for layer in free.modules():
        if isinstance(layer, nnqd.Linear):
            layer.forward = _Replay(layer.forward)
    with torch.no_grad():
        free(x)
    return free


def _table(nets: dict, batch: int, rounds: int, clock) -> list:
    """One row per size. Every path scores each batch in turn (one image at a time for the
    per-call paths), ``rounds`` times; a path's time is the sum over batches of its best round.
    Alternating batch by batch, the paths see alike what other processes do to the machine."""
    rows = []
    for arch, (model, per_call, torch_net, fp32, x) in nets.items():
        model.net(x[:batch])                      # warm-up (first-call allocations)
        paths = {"call": (per_call, 1), "call free": (_linears_free(per_call, x[:1]), 1),
                 "exact": (model.net, batch), "other gemm": (_OtherGemm(model.net), batch),
                 "mixed": (torch_net, batch), "fp32": (fp32, batch),
                 "free": (_linears_free(model.net, x[:batch]), batch)}
        chunks = x.split(batch)
        best = {key: [float("inf")] * len(chunks) for key in paths}
        logits = {key: [None] * len(chunks) for key in paths}
        for _ in range(rounds):
            for i, chunk in enumerate(chunks):
                for key, (net, size) in paths.items():
                    logits[key][i], seconds = _timed(net, chunk, size, clock)
                    best[key][i] = min(best[key][i], seconds)
        total = {key: sum(times) for key, times in best.items()}
        ref, exact, other = (torch.cat(logits[key]) for key in ("call", "exact", "other gemm"))
        ms = {key: f"{1e3 * seconds / len(x):.2f}" for key, seconds in total.items()}
        rows.append([arch, ms["call"], ms["call free"], ms["exact"], f"{total['call'] / total['exact']:.1f}x",
                     int((exact.argmax(1) != ref.argmax(1)).sum()), f"{(exact - ref).abs().max().item():.3g}",
                     ms["other gemm"], int((other.argmax(1) != ref.argmax(1)).sum()),
                     "yes" if int8_state_hash(per_call.state_dict()) == model.info.weight_hash else "NO",
                     ms["mixed"], ms["fp32"], ms["free"], f"{total['call'] / total['free']:.1f}x"])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["deit_tiny", "deit_small", "deit_base"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", help="torch thread counts, a table each "
                                                               "(default: torch's own choice)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: the process's CPU time, blind to time slices other processes take "
                             "(meaningful at one thread)")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    images = load_dataset(DATA_SOURCE, "test", limit=IMAGE_LIMIT).images
    nets = {}
    for arch in args.arch:
        model = load_model(arch + ":int8", progress=False)
        assert model.net.exact, "torch's INT8 kernel here is not fbgemm: nothing to compare"
        fp32 = load_model(arch, progress=False).net.cpu().eval()
        torch_net = quantize_net(fp32)
        nets[arch] = model, BatchInvariant(torch_net, exact=False), torch_net, fp32, model.normalize(images)
    gemms = ("int8 (this CPU has VNNI)", "float32") if int8_exact.int8_gemm_is_fast() else \
        ("float32 (no VNNI here)", "int8")
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        rows = _table(nets, args.batch, args.rounds, clock)
        print(f"\n{len(images)} {DATA_SOURCE} test images, batch {args.batch}, {threads} thread(s), "
              f"{args.clock} clock, best of {args.rounds} round(s) per batch, paths alternating; "
              f"exact integer products: {gemms[0]} GEMM")
        print(tabulate(rows, headers=["model", "ms/img per call", "per call, linears free",
                                      f"batch {args.batch} exact", "speed-up", "differing preds",
                                      "max |logit diff|", f"exact, {gemms[1]} GEMM", "its differing preds",
                                      "same weight hash", "torch INT8 batched (mixes)",
                                      "FP32 batched", "floor: INT8 linears free", "ceiling: per call / floor"]))


if __name__ == "__main__":
    main()
