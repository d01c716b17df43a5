"""The shipped default zoo: trained weights inside the package, the same on every machine.

Training the default zoo on two machines gives two zoos: float reduction order differs between
CPUs, and over hundreds of steps the weights part ways (one machine's ``deit_small:prune0.5``
scored 0.94, another's 0.65), so the shipped specs' verdicts would depend on who trained them.
So the weights the README's findings come from ship in ``vitrobust/zoo/release/`` (one file per
model and ``manifest.json``), made by this project's own training code with one command::

    vitrobust zoo build --release        # trains with an empty cache, writes the files here

Loading a default-zoo model looks in the user cache first, then here. A shipped file is used
only when its *release key* matches what the code would train now: the model name, recipe,
training-data name, base weights and ``TRAINING_CODE_VERSION`` (not the torch version or the
data's float fingerprint, which are what differ between machines). A changed recipe therefore
trains on first use as before; and a shipped file whose weights do not hash to the manifest's
``weight_hash`` is an error, never silently used.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..errors import VitrobustError
from ..fileio import atomic_write
from .cache import TRAINING_CODE_VERSION, state_hash

RELEASE_DIR = Path(__file__).with_name("release")
MANIFEST = "manifest.json"
SHIPPED = "shipped with vitrobust"          # meta["weights"] of a model loaded from the release
SCORED = ("val_acc", "base_val_acc")        # a variant's check against its base, kept in the manifest

_state = {"shipped": True}       # False while `zoo build --release` trains the release itself
BUILT: dict[str, dict] = {}      # name -> {"key", "model"}: what this process trained or loaded


class ReleaseError(VitrobustError):
    """A shipped weight file that does not match its manifest (a damaged installation)."""


def release_key(name: str, recipe: dict, data: str, **extra) -> str:
    material = {"name": name, "recipe": recipe, "data": data, "extra": extra,
                "training_code": TRAINING_CODE_VERSION}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def use_shipped(enabled: bool) -> None:
    """``False``: ignore the shipped weights (building the release must train, not reload it)."""
    _state["shipped"] = bool(enabled)


def manifest(folder: Path = RELEASE_DIR) -> dict:
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def shipped_weights(name: str, key: str, folder: Path = RELEASE_DIR) -> dict | None:
    """The shipped state dict of ``name`` when its release key is ``key``, else None."""
    if not _state["shipped"]:
        return None
    entry = manifest(folder).get(name)
    if entry is None or entry["key"] != key:
        return None
    path = folder / entry["file"]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ReleaseError(f"{path}: shipped weights of {name} do not load ({exc.__class__.__name__}); "
                           "reinstall vitrobust") from None
    if state_hash(state) != entry["weight_hash"]:
        raise ReleaseError(f"{path}: shipped weights of {name} do not hash to the manifest's "
                           f"{entry['weight_hash']}; reinstall vitrobust")
    return state


def remember(name: str, key: str, model) -> None:
    """Note what this process built under which release key (``zoo build --release`` ships it)."""
    BUILT[name] = {"key": key, "model": model}


def write_release(names: list[str], folder: Path = RELEASE_DIR) -> dict:
    """Write the weights of ``names`` (built in this process) and their manifest to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name in names:
        built, file = BUILT[name], f"{name.replace(':', '__')}.pt"
        state, meta = built["model"].net.state_dict(), built["model"].info.meta
        atomic_write(folder / file, lambda tmp, s=state: torch.save(s, tmp))
        entries[name] = {"file": file, "key": built["key"], "weight_hash": state_hash(state),
                         **{k: meta[k] for k in SCORED if k in meta}}
    atomic_write(folder / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(entries, indent=1, sort_keys=True)))
    return entries


def cached_or_trained(model, name: str, key: str, shipped_key: str, train) -> None:
    """Give ``model`` its weights: the user cache (``key``), else the shipped release
    (``shipped_key``), else ``train()`` and cache the result. Two processes that need the same
    untrained model train it once: the other waits on the cache entry's lock, then loads it."""
    from . import cache

    state = cache.load_weights(name, key)
    if state is None and (state := shipped_weights(name, shipped_key)) is not None:
        model.info.meta["weights"] = SHIPPED
        entry = manifest()[name]   # scored against its base when the release was built
        model.info.meta.update({k: entry[k] for k in SCORED if k in entry})
    if state is None:
        def trained():
            train()
            return model.net.state_dict()
        state, made = cache.get_or_train(name, key, trained)
        if made:
            state = None   # the model holds what it was trained to
    if state is not None:
        model.net.load_state_dict(state)
    remember(name, shipped_key, model)
