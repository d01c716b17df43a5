"""ModelName: parsed once, behaves as its text everywhere a str does."""
import json
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vitrobust.errors import VitrobustError
from vitrobust.names import ModelName, ModelNameError

part = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,12}", fullmatch=True)


@given(part, st.lists(part, max_size=3))
def test_parts_round_trip_through_the_text(base, suffixes):
    name = ModelName.join(base, suffixes)
    assert name.base == base and name.suffixes == tuple(suffixes)
    assert ModelName(str(name)) == name and str(name) == ":".join([base, *suffixes])
    assert name.chain()[-1] == name and name.chain()[0] == base
    assert pickle.loads(pickle.dumps(name)).suffixes == tuple(suffixes)


def test_parent_and_last_suffix():
    name = ModelName("deit_small:prune0.7:int8")
    assert name.parent == "deit_small:prune0.7" and name.parent.parent == "deit_small"
    assert name.last_suffix == "int8" and ModelName("deit_small").parent is None
    assert name.with_base("deit_small_patch16_224") == "deit_small_patch16_224:prune0.7:int8"


def test_is_a_str_for_dicts_json_and_comparison():
    name = ModelName("deit_tiny:int8")
    assert {"deit_tiny:int8": 1}[name] == 1 and name == "deit_tiny:int8"
    assert json.loads(json.dumps({"m": name})) == {"m": "deit_tiny:int8"}
    assert ModelName(name) is name


@pytest.mark.parametrize("bad", ["", ":int8", "deit::int8", "deit:", "9deit", "deit small", "deit:in t8", "deit-small"])
def test_malformed_names_are_one_line_errors(bad):
    with pytest.raises(ModelNameError, match="bad model name") as info:
        ModelName(bad)
    assert isinstance(info.value, VitrobustError) and "\n" not in str(info.value)


def test_not_a_string_is_refused():
    with pytest.raises(ModelNameError, match="must be a string"):
        ModelName(3)


def test_a_replica_seed_belongs_to_the_base_and_travels_along_the_chain():
    name = ModelName("deit_small@s2:prune0.7:int8")
    assert (name.base, name.suffixes, name.seed) == ("deit_small", ("prune0.7", "int8"), 2)
    assert name.parent == "deit_small@s2:prune0.7" and name.chain()[0] == "deit_small@s2"
    assert name.with_base("deit_small_patch16_224") == "deit_small_patch16_224@s2:prune0.7:int8"
    assert ModelName("deit_small:int8").replica(1) == "deit_small@s1:int8"
    assert name.replica(0) == "deit_small:prune0.7:int8"
    assert pickle.loads(pickle.dumps(name)).seed == 2


def test_replica_zero_is_the_default_zoo_spelled_one_way():
    assert ModelName("deit_small@s0:int8") == "deit_small:int8"
    assert ModelName("deit_small@s0").seed == 0


@pytest.mark.parametrize("bad", ["deit@s", "deit@1", "deit@s01", "deit:int8@s1", "@s1", "deit@s1@s2", "deit@s-1"])
def test_malformed_replica_tags_are_one_line_errors(bad):
    with pytest.raises(ModelNameError, match="bad model name"):
        ModelName(bad)
