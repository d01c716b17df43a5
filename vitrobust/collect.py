"""Spec files as pytest collectors: a file holds specs, a spec at one matrix point holds checks,
and each check is one item whose verdict comes from the session's engine."""
from __future__ import annotations

import pytest

from .errors import VitrobustError
from .fileio import WriteError


class CheckFailed(AssertionError):
    """A check's verdict was 'fails' (or 'inconclusive' under policy fail)."""


class SeedDependence(AssertionError):
    """Across seed replicas, a check varied with the training seed where its spec did not say so
    (or did not vary where the spec says ``varies:``). Not a :class:`CheckFailed`, so a spec's
    ``xfail:`` does not absorb it."""


class SpecFile(pytest.File):
    """A YAML file of one or more specs."""

    def collect(self):
        from .attacks import validate_attack
        from .plugin import session_of
        from .spec import load_spec_file

        zoo = session_of(self.config).zoo
        aliases = set(zoo.models) if zoo else set()
        specs = load_spec_file(self.path, known_models=lambda name: _known_model(name, aliases),
                               check_attack=validate_attack)
        for spec in specs:
            groups: dict[tuple, list] = {}
            for check in spec.checks:
                groups.setdefault(tuple(sorted(check.params.items())), []).append(check)
            for params, checks in groups.items():
                label = ",".join(f"{k}={v}" for k, v in params)
                name = f"{spec.id}[{label}]" if label else spec.id
                yield SpecNode.from_parent(self, name=name, spec=spec, checks=checks)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, VitrobustError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


def _known_model(name: str, zoo_aliases: set[str]) -> bool:
    """A spec's model name is known if its base is registered (or aliased by a zoo config) and
    every suffix is a known compression."""
    from .compress import parse_suffix
    from .names import ModelName
    from .zoo.registry import is_registered

    try:
        name = ModelName(name)
        if not (is_registered(name.base) or name.base in zoo_aliases):
            return False
        for suffix in name.suffixes:
            parse_suffix(suffix)
    except VitrobustError:
        return False
    return True


class SpecNode(pytest.Collector):
    """One spec at one point of its matrix."""

    def __init__(self, *, spec, checks, **kwargs):
        super().__init__(**kwargs)
        self.spec, self.checks = spec, checks
        self.add_marker(pytest.mark.vitrobust_spec(spec.id))

    def collect(self):
        one_build = self.config.getoption("vitrobust_seeds") == 1
        for check in self.checks:
            item = CheckItem.from_parent(self, name=check.text, spec=self.spec, check=check)
            reason = check.strict_xfail(one_build)
            if reason:
                # strict: a claim that starts to hold again must be noticed and the xfail removed
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True, raises=CheckFailed))
            yield item


class CheckItem(pytest.Item):
    def __init__(self, *, spec, check, **kwargs):
        super().__init__(**kwargs)
        self.spec, self.check = spec, check

    def runtest(self):
        from .plugin import session_of

        session = session_of(self.config)
        option = self.config.getoption
        confidence = option("vitrobust_confidence") or self.spec.confidence
        engine = session.engine
        try:
            verdict = engine.evaluate(self.check.node, self.spec.attacks, self.spec.data, self.spec.id,
                                      confidence, label=self.check.text)
        except WriteError as exc:   # a full disk or a read-only cache: no later check can do better
            self.session.shouldstop = f"{exc} (the checks decided before it are kept)"
            raise
        policy = option("vitrobust_inconclusive") or self.check.inconclusive or self.spec.inconclusive
        record = session.checks[self.nodeid]
        record.status, record.message, record.confidence = verdict.status, verdict.message, confidence
        record.values, record.statistic, record.p_value = dict(verdict.values), verdict.statistic, verdict.p_value
        record.intervals = {k: list(v) for k, v in verdict.intervals.items()}
        record.replicas, record.heterogeneity = list(verdict.replicas), dict(verdict.heterogeneity)
        self._expect_seed_dependence(verdict, engine.seeds)
        if verdict.status == "holds":
            return
        if verdict.status == "inconclusive" and policy == "skip":
            pytest.skip(f"inconclusive at confidence {confidence}: {verdict.statistic}")
        if verdict.status == "inconclusive" and policy == "xfail":
            pytest.xfail(f"inconclusive at confidence {confidence}: {verdict.statistic}")
        raise CheckFailed(f"{verdict.status}: {self.check.text}\n{verdict.message}")

    def _expect_seed_dependence(self, verdict, seeds: int) -> None:
        """``varies:`` in the spec against what the replicas showed (see :mod:`.spec_checks`)."""
        from .replicate import VARIES

        reason = self.check.varies
        if seeds > 1 and (verdict.status == VARIES) != bool(reason):
            expected = f"the spec says it varies ({reason})" if reason else "the spec does not say so (varies: REASON)"
            raise SeedDependence(f"{verdict.status} across {seeds} training seeds, but {expected}: "
                                 f"{self.check.text}\n{verdict.message}")
        if reason:
            one_build = "" if seeds > 1 else "; one build cannot decide it (run with --vitrobust-seeds K)"
            pytest.xfail(f"varies with the training seed: {reason}{one_build}")

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, (CheckFailed, SeedDependence)):
            claim = f"claim: {self.check.claim}\n" if self.check.claim else ""
            return f"{claim}{excinfo.value}"
        if isinstance(excinfo.value, VitrobustError):
            return f"{excinfo.value.__class__.__name__}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, self.check.line, f"{self.spec.id}: {self.check.text}"
