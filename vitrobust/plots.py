"""PNG plots of a run record, drawn only where the run holds the data for them.

- ASR against keep-rate for token-pruned families (models whose ``ModelRecord.meta`` has a
  ``keep_rate``, as the pruning compression records it; the name is not parsed for it, what a
  suffix means is the compression registry's business). The family is ``meta.base`` or the name
  without its last suffix (:class:`vitrobust.names.ModelName`), the dense model at keep-rate 1.0:
  one solid line per family and attack, plus a dashed line for transfer from the dense model
  where measured (DynamicViT-style pruning, paper section 7.3).
- A source x target heatmap of transfer ASR per attack.
- ASR against model size (MB) and against throughput (images/s), labelled scatter.
- Per-seed effects of the checks decided across training seeds (``--vitrobust-seeds K``), one
  figure per spec: each check's ``left - right`` (first link) per seed, coloured by that seed's
  verdict, with the combined verdict in the label: a forest plot that shows seed dependence.
- Each universal adversarial perturbation (artifacts ``uap:<model>:<attack>`` -> ``.npy``; the
  model may carry suffixes, the attack is after the last ``:``), amplified to fill the grey range
  so a perturbation of a few /255 is visible.

Attacks are labelled as the spec names them (``MeasurementRecord.alias``, else the registry name).

Matplotlib is used through ``Figure`` + the Agg canvas directly, never pyplot, so drawing a report
neither needs a display nor changes the caller's backend. Reads :class:`vitrobust.record.RunRecord`;
no torch.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .names import ModelName, ModelNameError
from .record import ModelRecord, RunRecord


@dataclass(frozen=True)
class Plot:
    name: str      # file stem, e.g. "transfer_pgd"
    title: str
    png: bytes


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _first(run: RunRecord, kind: str) -> dict:
    """``(target, source, attack) -> measurement`` for ``kind``, first one wins (specs may repeat);
    the attack as the spec names it."""
    out = {}
    for m in run.measurements:
        if m.kind == kind and _finite(m.value):
            out.setdefault((m.target, m.source, m.alias or m.attack), m)
    return out


def _errbar(points):
    """Asymmetric error bars from each measurement's interval (zero where there is none)."""
    lower, upper = [], []
    for _, m in points:
        lo, hi = m.interval or (m.value, m.value)
        lower.append(max(0.0, m.value - lo))
        upper.append(max(0.0, hi - m.value))
    return [lower, upper]


def base_of(name: str, info: ModelRecord) -> str:
    """The dense model a compressed variant was made from: ``meta.base``, else the name without
    its last suffix (the name itself when it has none)."""
    if info.meta.get("base"):
        return str(info.meta["base"])
    try:
        return ModelName(name).parent or name
    except ModelNameError:   # a name from an older record that is not base[:suffix...]
        return name


def keep_rate_lines(run: RunRecord) -> dict:
    """``(family, attack, "asr" | "transfer") -> [(keep-rate, measurement)]`` by keep-rate: the
    lines of the keep-rate plot, each with at least one pruned point."""
    models = run.models
    keep = {name: float(info.meta["keep_rate"]) for name, info in models.items()
            if _finite(info.meta.get("keep_rate"))}
    family = {name: base_of(name, models[name]) for name in keep}
    for base in set(family.values()):
        family[base] = base
        keep.setdefault(base, 1.0)
    asr = _first(run, "asr")
    transfer = _first(run, "transfer")
    lines = {}   # (base, attack, style) -> [(keep, meas)]
    for (target, _, attack), m in asr.items():
        if target in family:
            lines.setdefault((family[target], attack, "asr"), []).append((keep[target], m))
    for (target, source, attack), m in transfer.items():
        if target in family and source == family[target] and target != source:
            lines.setdefault((source, attack, "transfer"), []).append((keep[target], m))
    # A line needs at least one pruned point to say anything about keep-rate.
    return {k: sorted(v, key=lambda p: p[0]) for k, v in lines.items()
            if any(rate < 1.0 for rate, _ in v)}


def keep_rate_plot(run: RunRecord) -> Plot | None:
    lines = keep_rate_lines(run)
    if not lines:
        return None
    fig = Figure(figsize=(9.6, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colors = {}
    for (base, attack, style), points in sorted(lines.items(), key=lambda kv: str(kv[0])):
        color = colors.setdefault((base, attack), f"C{len(colors) % 10}")
        label = f"{base} / {attack}" + (" (transfer from dense)" if style == "transfer" else "")
        ax.errorbar([p[0] for p in points], [p[1].value for p in points],
                    yerr=_errbar(points), marker="o" if style == "asr" else "s", capsize=3,
                    linestyle="-" if style == "asr" else "--", color=color, label=label)
    ax.set_xlabel("keep-rate (1.0 = dense)")
    ax.set_ylabel("attack success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.invert_xaxis()   # compression grows to the right
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))   # beside, never on the data
    ax.set_title("ASR against token keep-rate")
    return Plot("asr_keep_rate", "ASR against keep-rate", _png(fig))


def transfer_heatmaps(run: RunRecord) -> list[Plot]:
    by_attack: dict = {}
    for (target, source, attack), m in _first(run, "transfer").items():
        by_attack.setdefault(attack, {})[(source, target)] = m.value
    plots = []
    for attack in sorted(by_attack, key=str):
        cells = by_attack[attack]
        sources = sorted({s for s, _ in cells}, key=str)
        targets = sorted({t for _, t in cells}, key=str)
        grid = np.full((len(sources), len(targets)), np.nan)
        for (s, t), v in cells.items():
            grid[sources.index(s), targets.index(t)] = v
        fig = Figure(figsize=(1.6 + 1.1 * len(targets), 1.4 + 0.6 * len(sources)))
        ax = fig.add_subplot()
        image = ax.imshow(np.ma.masked_invalid(grid), vmin=0.0, vmax=1.0, cmap="viridis",
                          aspect="auto")
        ax.set_facecolor("#dddddd")   # unmeasured pairs
        ax.set_xticks(range(len(targets)), targets, rotation=35, ha="right", fontsize="small")
        ax.set_yticks(range(len(sources)), sources, fontsize="small")
        ax.set_xlabel("target (scored on)")
        ax.set_ylabel("source (attacked)")
        for i in range(len(sources)):
            for j in range(len(targets)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if grid[i, j] < 0.6 else "black")
        fig.colorbar(image, ax=ax, label="transfer ASR")
        ax.set_title(f"Transfer ASR, attack {attack}")
        plots.append(Plot(f"transfer_{_stem(attack)}", f"Transfer heatmap ({attack})", _png(fig)))
    return plots


def scatter_plots(run: RunRecord) -> list[Plot]:
    models = run.models
    asr = _first(run, "asr")
    plots = []
    for field, label, log in (("size_mb", "model size (MB)", False),
                              ("throughput", "throughput (images/s)", True)):
        points = [(getattr(models[t], field), m.value, t, a) for (t, _, a), m in asr.items()
                  if t in models and _finite(getattr(models[t], field))]
        if not points:
            continue
        # One panel per attack (small multiples): on one shared panel the model labels of six
        # attacks piled on top of each other and the legend hid points.
        attacks = sorted({p[3] for p in points}, key=str)
        ncols = min(3, len(attacks))
        nrows = math.ceil(len(attacks) / ncols)
        fig = Figure(figsize=(4.2 * ncols, 3.3 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
        for i, (ax, attack) in enumerate(zip(axes, attacks)):
            sel = [p for p in points if p[3] == attack]
            ax.scatter([p[0] for p in sel], [p[1] for p in sel], color=f"C{i % 10}")
            for x, y, name, _ in sel:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
            if log and min(p[0] for p in points) > 0:
                ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.05)
            ax.grid(alpha=0.3)
            ax.set_title(str(attack), fontsize="medium")
        for ax in axes[len(attacks):]:
            ax.set_visible(False)
        fig.supxlabel(label)
        fig.supylabel("attack success rate")
        fig.suptitle(f"ASR against {label.split(' (')[0]}")
        plots.append(Plot(f"asr_vs_{field}", f"ASR against {label}", _png(fig)))
    return plots


def uap_parts(key: str) -> tuple[str, str]:
    """``(model, attack)`` of an artifact key ``uap:<model>:<attack>``; the model may carry
    suffixes (``uap:deit_tiny:int8:uap``), the attack is what follows the last ``:``."""
    model, _, attack = key[len("uap:"):].rpartition(":")
    return str(ModelName(model)), attack


def uap_plots(run: RunRecord) -> tuple[list[Plot], list[str]]:
    plots, problems = [], []
    for key, path in sorted(run.artifacts.items()):
        if not key.startswith("uap:"):
            continue
        try:
            model, attack = uap_parts(key)
        except ModelNameError as exc:
            problems.append(f"{key}: not uap:<model>:<attack>: {exc}")
            continue
        try:
            delta = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        except (OSError, ValueError) as exc:
            problems.append(f"{key}: cannot read {path}: {exc}")
            continue
        delta = np.squeeze(delta)
        if delta.ndim == 3 and delta.shape[0] in (1, 3) and delta.shape[-1] not in (1, 3):
            delta = np.moveaxis(delta, 0, -1)   # CHW -> HWC
        if delta.ndim == 3 and delta.shape[-1] == 1:
            delta = delta[..., 0]
        if delta.ndim not in (2, 3):
            problems.append(f"{key}: {path} has shape {delta.shape}, not an image")
            continue
        peak = float(np.max(np.abs(delta))) or 1.0
        shown = np.clip(delta / (2 * peak) + 0.5, 0.0, 1.0)
        fig = Figure(figsize=(3.6, 3.8))
        ax = fig.add_subplot()
        ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, interpolation="nearest",
                  vmin=0.0, vmax=1.0)
        ax.set_axis_off()
        ax.set_title(f"UAP {model} / {attack}\nL∞ = {peak:.4f} ({peak * 255:.1f}/255),"
                     f" shown ×{0.5 / peak:.0f}", fontsize=9)
        plots.append(Plot(f"uap_{_stem(model)}_{_stem(attack)}", f"UAP {key[4:]}", _png(fig)))
    return plots, problems


def make_plots(run: RunRecord) -> tuple[list[Plot], list[str]]:
    """Every plot the run has data for, and one-line notes for artifacts that could not be drawn."""
    plots: list[Plot] = []
    keep = keep_rate_plot(run)
    if keep is not None:
        plots.append(keep)
    plots += transfer_heatmaps(run)
    plots += scatter_plots(run)
    plots += seed_effect_plots(run)
    uaps, problems = uap_plots(run)
    return plots + uaps, problems


_STATUS_COLORS = {"holds": "#1a7f37", "fails": "#cf222e", "inconclusive": "#6b7280"}


def seed_effect_rows(run: RunRecord) -> dict:
    """``spec -> [(check text, [(seed, effect, status)], verdict)]``: the first link's
    ``left - right`` of every check decided across seeds, where it is defined."""
    out: dict = {}
    for c in run.checks:
        per_seed = [(r["seed"], (r.get("effects") or [None])[0], r["status"]) for r in c.replicas]
        per_seed = [p for p in per_seed if _finite(p[1])]
        if per_seed:
            label = c.check if len(c.check) <= 70 else c.check[:67] + "..."
            out.setdefault(c.spec, []).append((label, per_seed, c.status))
    return out


def seed_effect_plots(run: RunRecord) -> list[Plot]:
    plots = []
    for spec, rows in seed_effect_rows(run).items():
        fig = Figure(figsize=(9.6, 1.0 + 0.32 * len(rows)), layout="constrained")
        ax = fig.add_subplot()
        for y, (_, per_seed, _) in enumerate(rows):
            for seed, effect, status in per_seed:
                ax.plot(effect, y, "o", color=_STATUS_COLORS.get(status, "k"), alpha=0.85)
                ax.annotate(str(seed), (effect, y), textcoords="offset points", xytext=(0, 5),
                            fontsize="x-small", ha="center")
        ax.axvline(0.0, color="k", linewidth=0.8)
        ax.set_yticks(range(len(rows)), [f"{label}  [{verdict}]" for label, _, verdict in rows],
                      fontsize="x-small")
        ax.invert_yaxis()
        ax.set_xlabel("left - right of the check's first comparison, per training seed "
                      "(green holds, red fails, grey inconclusive; the number is the seed)")
        ax.grid(alpha=0.3, axis="x")
        ax.set_title(f"{spec}: effect per training seed")
        plots.append(Plot(f"seed_effects_{_stem(spec)}", f"{spec}: effect per training seed", _png(fig)))
    return plots


def _stem(text) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)) or "_"
