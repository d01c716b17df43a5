"""The run's time profile: own seconds of nested phases, totals, the terminal lines."""
import pytest

from vitrobust.profile import Profile, by_kind, summary_lines


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_nested_phases_charge_their_own_time_once():
    clock = FakeClock()
    profile = Profile(clock)
    with profile.phase("check", "asr(a, pgd) > asr(b, pgd)"):
        clock.now += 1
        with profile.phase("adversarial", "a pgd"):
            clock.now += 2
            with profile.phase("model", "a"):
                clock.now += 4
        clock.now += 8
    items = {(i["kind"], i["name"]): i for i in profile.items()}
    assert items[("model", "a")]["seconds"] == 4 and items[("model", "a")]["total"] == 4
    assert items[("adversarial", "a pgd")]["seconds"] == 2 and items[("adversarial", "a pgd")]["total"] == 6
    check = items[("check", "asr(a, pgd) > asr(b, pgd)")]
    assert check["seconds"] == 9 and check["total"] == 15
    # own seconds add up to the wall time, once each
    assert sum(i["seconds"] for i in profile.items()) == clock.now == 15
    assert [i["kind"] for i in profile.items()] == ["check", "model", "adversarial"]   # costliest first


def test_a_repeated_phase_adds_up_and_counts():
    clock = FakeClock()
    profile = Profile(clock)
    for seconds in (1, 2):
        with profile.phase("scoring", "m"):
            clock.now += seconds
    (item,) = profile.items()
    assert (item["seconds"], item["count"]) == (3, 2)


def test_time_is_charged_even_when_the_phase_raises():
    clock = FakeClock()
    profile = Profile(clock)
    with pytest.raises(RuntimeError):
        with profile.phase("model", "broken"):
            clock.now += 5
            raise RuntimeError("training diverged")
    assert profile.items()[0]["seconds"] == 5
    with profile.phase("check", "after"):   # the stack is clean again
        clock.now += 1
    assert {i["name"]: i["total"] for i in profile.items()} == {"broken": 5, "after": 1}


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="profile kind"):
        with Profile().phase("lunch", "x"):
            pass


def test_summary_lines_sum_per_kind_and_list_the_top_items():
    items = [{"kind": "model", "name": f"m{i}", "seconds": float(i), "total": float(i), "count": 1}
             for i in range(1, 8)]
    items.append({"kind": "adversarial", "name": "m7 pgd", "seconds": 90.0, "total": 97.0, "count": 2})
    assert by_kind(items) == {"model": 28.0, "adversarial": 90.0}
    lines = summary_lines(items)
    assert lines[0] == "time: model 28.0 s, adversarial 1 min 30 s"
    assert len(lines) == 1 + 5
    assert "m7 pgd x2" in lines[1] and "m4" in lines[-1] and not any("m3" in l for l in lines)
    assert summary_lines([]) == []
