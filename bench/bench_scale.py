"""What the shipped specs would cost at ImageNet scale, from the planner's units and the measured
per-image costs (vitrobust/unit_costs.py). An estimate, not a measurement: there is no GPU here.

    python bench/bench_scale.py            # prints the README's "Scaling out" table

For each selection (all shipped specs; the checks naming deit_small, ``-k small``; those naming
deit_base, ``-k base``) the planner lists the adversarial sets; each is costed as if its models
were the paper's 224x224 architectures, with N images:

- a set costs ``N x passes x seconds per pass`` (unit_costs.attack): passes as measured on the
  default zoo (early exit assumed to behave the same), the pass of the 224x224 architecture as
  measured on this CPU (one thread). deit_tiny/small/base map to deit_{tiny,small,base}_patch16_224
  with the same suffix; :distilled, :advtrain and :bornagain cost what their dense model costs;
  cnn_small costs what DeiT-Ti costs (a ResNet-18 has about DeiT-Ti's 1.3-1.8 GFLOPs);
- a UAP is fitted on as many images as it is scored on (set ``fit_limit`` so in such a spec);
- one GPU does the work of ``F`` threads of this CPU, F = the DeiT paper's V100 throughput
  (Touvron et al. 2021, table 1: DeiT-Ti 2536, DeiT-S 940, DeiT-B 292 images/s at 224) times
  this CPU's measured single-thread seconds per forward pass; the same F for gradient passes
  and for compressed variants;
- INT8 runs on the CPU whatever the device (no CUDA kernels): its sets are CPU-hours, spread
  over the cluster's cores, listed apart;
- units are whole sets (one shard each) and are scheduled longest first on the least loaded
  GPU, so the wall time on many GPUs is bounded below by the longest set;
- the deciding session (one process, one GPU) then scores every set on its targets and every
  model on the clean slice: ``N`` forward passes per (set, target) and per (model, slice);
- model training is not included: at ImageNet scale the models come from checkpoints (--zoo).
"""
from __future__ import annotations

import heapq
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitrobust import unit_costs  # noqa: E402
from vitrobust.names import ModelName  # noqa: E402
from vitrobust.planner import plan  # noqa: E402
from vitrobust.selection import select  # noqa: E402

V100 = {"deit_tiny": 2536.0, "deit_small": 940.0, "deit_base": 292.0}   # images/s, DeiT paper table 1
ARCH = {"deit_tiny": "deit_tiny_patch16_224", "deit_small": "deit_small_patch16_224",
        "deit_base": "deit_base_patch16_224", "cnn_small": "deit_tiny_patch16_224"}
SAME_COST = ("distilled", "advtrain", "bornagain")   # the dense architecture's cost
GPUS = (1, 8, 32)
SELECTIONS = {"all shipped specs": [], "DeiT-S checks (-k small)": ["-k", "small"],
              "DeiT-B checks (-k base)": ["-k", "base"]}


def at_224(name: str) -> tuple[str, str]:
    """(the 224x224 model whose measured cost stands in for ``name``, its size for F)."""
    name = ModelName(name).replica(0)
    base = "deit_tiny" if name.base == "cnn_small" else name.base
    suffixes = [s for s in name.suffixes if s not in SAME_COST]
    return str(ModelName.join(ARCH[name.base], suffixes)), base


def gpu_factor(size: str) -> float:
    return V100[size] * unit_costs.forward(ARCH[size])


def set_cost(unit, images: int) -> tuple[float, bool]:
    """(seconds: GPU seconds, or CPU seconds for INT8; True when it runs on the CPU)."""
    model, size = at_224(unit.model)
    cpu = unit_costs.attack(unit.config, model, "white-box", images, images)
    on_cpu = ":int8" in model
    return (cpu if on_cpu else cpu / gpu_factor(size)), on_cpu


def makespan(costs: list[float], gpus: int) -> float:
    loads = [0.0] * gpus
    for cost in sorted(costs, reverse=True):
        heapq.heapreplace(loads, loads[0] + cost)
    return max(loads)


def main() -> None:
    rows = []
    for label, args in SELECTIONS.items():
        selected, engine = select([str(ROOT / "specs"), f"--rootdir={ROOT}", "--vitrobust-no-progress", *args])
        result = plan(engine, selected)
        for images in (1000, 5000):
            gpu, cpu, decide = [], 0.0, 0.0
            for unit in result.of("adversarial"):
                seconds, on_cpu = set_cost(unit, images)
                if on_cpu:
                    cpu += seconds
                else:
                    gpu.append(seconds)
                for target in unit.targets:   # the deciding session scores the set on each target
                    model, size = at_224(target)
                    decide += images * unit_costs.forward(model) / (1 if ":int8" in model else gpu_factor(size))
            for unit in result.of("clean"):
                model, size = at_224(unit.model)
                decide += images * unit_costs.forward(model) / (1 if ":int8" in model else gpu_factor(size))
            rows.append([label, images, len(result.of("adversarial")), sum(gpu) / 3600,
                         *[makespan(gpu, g) / 3600 for g in GPUS], cpu / 3600, decide / 3600])
    print("| selection | images | adversarial sets | GPU-hours | wall, 1 GPU | 8 GPUs | 32 GPUs "
          "| INT8 CPU-hours (one thread) | deciding session (1 GPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:,} | {r[2]} | {r[3]:.2f} h | {r[4]:.2f} h | {r[5]:.2f} h | {r[6]:.2f} h "
              f"| {r[7]:.1f} h | {r[8]:.2f} h |")
    print("\nF (threads of this CPU per V100):",
          ", ".join(f"{s} {gpu_factor(s):.0f}" for s in V100), file=sys.stderr)


if __name__ == "__main__":
    main()
