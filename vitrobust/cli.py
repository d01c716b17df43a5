"""The ``vitrobust`` command: zoo, measure, attacks, run, report, gate.

Every user error ends as one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
from pathlib import Path

from .executor_pool import parse_jobs

DEFAULT_SIZES = ("deit_tiny", "deit_small", "deit_base")
DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N (default: $VITROBUST_DEVICE, else auto)"


def default_zoo() -> list[str]:
    """Every model of the embedded default zoo, bases first then their compressed variants."""
    from .compress import DEFAULT_VARIANTS, CompressionError, parse_suffix

    def registered(suffix: str) -> bool:   # variants appear as their compression modules land
        try:
            return bool(parse_suffix(suffix))
        except CompressionError:
            return False

    names = ["cnn_small", *DEFAULT_SIZES]
    names += [f"{base}:{v}" for base in DEFAULT_SIZES for v in DEFAULT_VARIANTS if registered(v)]
    if registered("advtrain"):
        names.append("deit_tiny:advtrain")
    return names


def _matching(pattern: str | None) -> list[str]:
    from .zoo import list_models

    names = default_zoo() + [n for n in list_models() if n not in default_zoo()]
    return [n for n in names if fnmatch.fnmatch(n, pattern or "*")]


def cmd_zoo_list(args) -> int:
    from tabulate import tabulate

    from .compress import parse_suffix
    from .names import ModelName
    from .zoo import model_entry

    rows = []
    for name in map(ModelName, _matching(args.pattern)):
        entry = model_entry(name.base)
        if name.suffixes:
            comp, params = parse_suffix(name.last_suffix)
            what = f"{comp.prefix} {' '.join(f'{k}={v}' for k, v in params.items())}".strip()
            about = comp.about
        else:
            what, about = entry.family, entry.about
        rows.append([name, what, entry.data or "random / checkpoint", about])
    print(tabulate(rows, headers=["model", "kind", "data", "about"]))
    return 0


def cmd_zoo_build(args) -> int:
    if args.release is not None:
        return _build_release(args)
    names = _matching(args.pattern)
    if not names:
        raise SystemExit(_error(f"no model matches {args.pattern!r}; see 'vitrobust zoo list'"))
    device = _device(args)
    start = time.perf_counter()
    records = [_measure_one(name, None, device) for name in names]
    _print_measurements(records, args.json)
    print(f"built {len(records)} models in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


def _build_release(args) -> int:
    """Every model the shipped specs name, from the user cache or trained now (never from the
    shipped files), then the trained ones written as the release (``vitrobust.zoo.release``)."""
    from .spec import load_specs
    from .zoo import load_model, release

    if args.pattern:
        raise SystemExit(_error("--release builds the models of the specs in ./specs; give no pattern"))
    if not Path("specs").is_dir():
        raise SystemExit(_error("--release reads the shipped specs: run it in the repository (no specs/ here)"))
    named: set[str] = set()
    load_specs("specs", known_models=lambda name: named.add(str(name)) is None)
    _device(args)
    release.use_shipped(False)
    start = time.perf_counter()
    for name in sorted(named):
        load_model(name)
    folder = Path(args.release) if args.release else release.RELEASE_DIR
    entries = release.write_release(sorted(release.BUILT), folder)
    size = sum((folder / e["file"]).stat().st_size for e in entries.values()) / 1e6
    print(f"release: {len(entries)} trained models, {size:.1f} MB, in {folder} "
          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


def _device(args):
    """The resolved ``--device`` (else $VITROBUST_DEVICE, else auto), made the training device
    too: ``zoo.load_model`` trains on first use and takes no device of its own."""
    from .device import resolve_device, set_training_device

    device = resolve_device(args.device)
    set_training_device(device)
    return device


def _measure_one(name: str, input_size: int | None, device=None) -> dict:
    from . import metrics
    from .data import load_dataset
    from .device import home_device, place
    from .zoo import load_model

    model = load_model(name, random_weights=True)   # size, FLOPs, speed: weights do not matter
    model = place(model, device) if device is not None else model
    record = {"model": name, **metrics.efficiency(model, input_size), "device": str(home_device(model))}
    for key, digits in (("size_mb", 3), ("gflops", 4), ("throughput", 1)):
        record[key] = round(record[key], digits)
    if model.info.data is not None and input_size in (None, model.info.input_size):
        test = load_dataset(model.info.data, "test")
        record["clean_acc"] = round(float(metrics.correct(model, test.images, test.labels).float().mean()), 4)
    record["build_seconds"] = round(model.info.build_seconds, 1)
    if model.info.meta:
        record["meta"] = model.info.meta
    return record


def _print_measurements(records: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(records, indent=2))
        return
    from tabulate import tabulate

    headers = ["model", "params", "size_mb", "gflops", "throughput", "clean_acc", "build_seconds"]
    print(tabulate([[r.get(h, "") for h in headers] for r in records],
                   headers=[*headers[:4], f"throughput (img/s, batch {records[0]['throughput_batch']})",
                            *headers[5:]], floatfmt="g"))


def cmd_measure(args) -> int:
    device = _device(args)
    records = [_measure_one(name, args.input_size, device) for name in args.models]
    _print_measurements(records, args.json)
    return 0


def cmd_attacks_list(args) -> int:
    from tabulate import tabulate

    from .attacks import attack_class, list_attacks

    rows = []
    for name in list_attacks():
        cls = attack_class(name)
        defaults = cls().threat_model()
        defaults.pop("attack", None)
        rows.append([name, "yes" if cls.needs_grad else "no", "universal" if cls.universal else "per-image",
                     ", ".join(f"{k}={_fmt(v)}" for k, v in defaults.items())])
    print(tabulate(rows, headers=["attack", "gradients", "kind", "defaults"]))
    return 0


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def cmd_run(args, extra: list[str]) -> int:
    """Everything but --data, --zoo and --device goes to pytest untouched, in order.

    Spec paths are not parsed here: telling ``-k pruning`` from a spec path needs pytest's own
    option table. Instead, ``specs/`` is made the default through ``testpaths``, which pytest
    uses only when the command line names no path (rootdir is pinned to the working directory,
    since pytest applies ``testpaths`` only when run from its rootdir).

    ``-n N`` (pytest-xdist) without a ``--dist`` of the user's gets ``--dist loadgroup``: one
    source model's checks on one worker (:mod:`vitrobust.plugin_xdist`).
    """
    import pytest

    for arg in extra:
        if arg.endswith((".yaml", ".yml")) and not arg.startswith("-") and not Path(arg).exists():
            raise SystemExit(_error(f"{arg}: no such spec file"))
    names_a_path = any(not a.startswith("-") and Path(a.split("::")[0]).exists() for a in extra)
    if not names_a_path and not Path("specs").is_dir():
        raise SystemExit(_error("no specs/ folder here; name a spec file or folder"))
    if args.device:   # the same one-line error as measure, before pytest starts
        from .device import resolve_device

        resolve_device(args.device)
    pytest_args = [f"--rootdir={Path.cwd()}", "-o", "testpaths=specs", "-q", "-rfEsxX", *extra]
    if args.data:
        pytest_args += ["--vitrobust-data", args.data]
    if args.zoo:
        pytest_args += ["--vitrobust-zoo", args.zoo]
    if args.device:
        pytest_args += ["--vitrobust-device", args.device]
    if args.executor != "ray":   # a pool of processes here, when there is enough to do (plugin_pool)
        pytest_args += ["--vitrobust-jobs", args.jobs]
    from .plugin_xdist import asks_for_workers, names_dist

    if asks_for_workers(extra) and not names_dist(extra):
        pytest_args += ["--dist", "loadgroup"]
    if args.ray_address and args.executor != "ray":
        raise SystemExit(_error("--ray-address needs --executor ray"))
    if args.executor == "ray":   # fill the cache on Ray first; the session below decides from it
        from .executor_ray import fill_cache

        fill_cache(pytest_args, address=args.ray_address)
    from .fill import forget_worker_profile

    try:
        return int(pytest.main(pytest_args))
    finally:
        forget_worker_profile()   # it belonged to this run


def cmd_plan(args, extra: list[str]) -> int:
    """The work units the selected checks need (vitrobust.planner), without running any.
    Every other argument goes to pytest's collection, as for ``run``."""
    from .planner import plan
    from .selection import select

    names_a_path = any(not a.startswith("-") and Path(a.split("::")[0]).exists() for a in extra)
    if not names_a_path and not Path("specs").is_dir():
        raise SystemExit(_error("no specs/ folder here; name a spec file or folder"))
    pytest_args = [f"--rootdir={Path.cwd()}", "-o", "testpaths=specs", *extra]
    for option, value in (("--vitrobust-data", args.data), ("--vitrobust-zoo", args.zoo),
                          ("--vitrobust-device", args.device)):
        if value:
            pytest_args += [option, value]
    selected, engine = select(pytest_args)
    result = plan(engine, selected)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(_plan_table(result))
    return 0


def _plan_table(result) -> str:
    from tabulate import tabulate

    def cached(u):
        return "yes" if u.cached else "no"

    def seconds(value):
        return "?" if value is None else f"{value:.1f}"

    rows = [[u.kind, u.model, u.attack, u.data, u.shard, cached(u), seconds(u.cost),
             u.key.split("/")[-1][:16] or "(pending)",
             ", ".join(u.targets)] for u in result.units]
    table = tabulate(rows, headers=["kind", "model", "attack", "data", "shard", "cached",
                                    "est. s", "key", "scored on"])
    totals = result.totals()
    lines = [table, "", f"{totals['checks']} checks:"]
    for kind in ("model", "clean", "adversarial"):
        t = totals[kind]
        not_cached = f"{t['todo']} to make"
        unknown = f", {t['unestimated']} without an estimate" if t["unestimated"] else ""
        lines.append(f"  {kind}: {t['units']} units, {t['cached']} cached, {not_cached}, "
                     f"est. {t['cost']:.0f} CPU-s{unknown}")
    lines.append(f"  total to do: est. {totals['cost']:.0f} CPU-seconds of one thread (vitrobust/unit_costs.py)")
    return "\n".join(lines)


def cmd_gate(argv: list[str]) -> int:
    from .gate import gate_main

    return gate_main(argv)


def cmd_report(args) -> int:
    from .report import write_reports
    from .store import Store

    store = Store(args.db)
    run = store.load_run(args.run_id) if args.run_id != "latest" else store.latest_run()
    if run is None:
        raise SystemExit(_error(f"{store.where}: no complete run {args.run_id!r}"))
    paths = write_reports(run, Path(args.out))
    print(f"report: {paths.get('html') or next(iter(paths.values()))}")
    return 0


def cmd_runs(args) -> int:
    """The recorded runs, newest first; with --all also those that never completed (a run whose
    process is gone reads as interrupted)."""
    from tabulate import tabulate

    from .store import Store

    with Store(args.db, create=False) as store:
        runs = store.list_runs(include_incomplete=args.all)[: args.last]
    columns = ["run_id", "started", "status", "git_commit", "checks", "failed"]
    print(tabulate([[str(r.get(c) or "")[:12 if c == "git_commit" else None] for c in columns] for r in runs],
                   headers=columns) if runs else f"{store.where}: no runs recorded")
    return 0


def _error(message: str) -> int:
    print(f"vitrobust: error: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitrobust", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    zoo = sub.add_parser("zoo", help="list or build the model zoo").add_subparsers(dest="zoo_command", required=True)
    p = zoo.add_parser("list", help="list models and compressed variants")
    p.add_argument("pattern", nargs="?", help="glob, e.g. 'deit_small*'")
    p.set_defaults(func=cmd_zoo_list)
    p = zoo.add_parser("build", help="train (or load from cache) and measure models")
    p.add_argument("pattern", nargs="?", help="glob, e.g. 'deit_*:prune*'")
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--release", metavar="DIR", nargs="?", const="", default=None,
                   help="build every model the shipped specs name, ignoring the shipped weights, and write the "
                        "trained ones and their manifest to DIR (default: the package's vitrobust/zoo/release)")
    p.set_defaults(func=cmd_zoo_build)

    p = sub.add_parser("measure", help="params, size, GFLOPs, throughput (and clean accuracy)")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", help=DEVICE_HELP)
    p.set_defaults(func=cmd_measure)

    attacks = sub.add_parser("attacks", help="the attack registry").add_subparsers(dest="attacks_command", required=True)
    attacks.add_parser("list", help="every attack with its defaults").set_defaults(func=cmd_attacks_list)

    p = sub.add_parser("run", allow_abbrev=False,
                       help="run specs (default: specs/) on the zoo and write a report; "
                            "every other argument (spec paths, -k, --vitrobust-*) goes to pytest")
    p.add_argument("--data", help="data source: 'digits' (default) or an ImageFolder path")
    p.add_argument("--zoo", help="zoo config YAML pointing spec model names elsewhere")
    p.add_argument("--device", help=DEVICE_HELP + " (passed to pytest as --vitrobust-device)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="ray: first make the models and adversarial sets not yet cached as Ray tasks "
                        "(pip install 'vitrobust[ray]'), then decide in this process from the cache")
    p.add_argument("--ray-address", metavar="HOST:PORT", default=None,
                   help="the Ray cluster's head (ray start --head); default: a local Ray on this machine")
    p.add_argument("-j", "--jobs", type=parse_jobs, default=os.environ.get("VITROBUST_JOBS", "auto"),
                   help="local executor: make the models, predictions and adversarial sets not yet cached "
                        "in this many processes first, then decide in this one; 'auto' (default, or "
                        "$VITROBUST_JOBS): one per core when the plan has a minute of work or more; 1: "
                        "everything in this process")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plan", allow_abbrev=False,
                       help="the work units (model builds, adversarial sets, predictions) the selected specs "
                            "need, cached or not, with estimated costs; other arguments (spec paths, -k) go to "
                            "pytest's collection")
    p.add_argument("--data", help="data source: 'digits' (default) or an ImageFolder path")
    p.add_argument("--zoo", help="zoo config YAML pointing spec model names elsewhere")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--json", action="store_true", help="the units and totals as JSON")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("report", help="re-render the report of a recorded run")
    p.add_argument("run_id", nargs="?", default="latest")
    p.add_argument("--db", default="reports/vitrobust.sqlite",
                   help="results database: an SQLite path or a postgresql:// URL")
    p.add_argument("--out", default="reports")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("runs", help="the recorded runs (--all: also interrupted ones), newest first")
    p.add_argument("--db", default="reports/vitrobust.sqlite",
                   help="results database: an SQLite path or a postgresql:// URL")
    p.add_argument("--all", action="store_true", help="also runs that never completed (running, interrupted)")
    p.add_argument("--last", type=int, default=20, help="at most this many (default 20)")
    p.set_defaults(func=cmd_runs)

    sub.add_parser("gate", help="compare a run with a baseline; exit 1 on regressions", add_help=False)
    sub.add_parser("diff", help="same verdicts and non-timing numbers in two report.json? exit 1 if not",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gate"]:
        return cmd_gate(argv[1:])
    if argv[:1] == ["diff"]:
        from .reportdiff import main as diff_main

        return diff_main(argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("run", "plan"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from .errors import VitrobustError

    try:
        return args.func(args, extra) if args.command in ("run", "plan") else args.func(args)
    except VitrobustError as exc:   # a user's mistake: one line; anything else is a bug and keeps its traceback
        return _error(str(exc))
    except OSError as exc:          # a file that cannot be read or written: name it
        return _error(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))


if __name__ == "__main__":
    sys.exit(main())
