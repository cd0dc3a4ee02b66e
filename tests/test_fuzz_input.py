"""Generated bad input: every case is accepted or refused with one line (UsageError), never a crash."""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scoutfs_collect.core import arguments, profile, registry
from scoutfs_collect.core.errors import UsageError
from scoutfs_collect.core.instances import build_instances
from scoutfs_collect.plugin import options
from scoutfs_collect.plugin.api import Target

REG = registry.load()
TYPE_NAMES = sorted(REG.types)
OPTION_NAMES = sorted({o.name for t in REG.types.values() for o in t.options})
WORDS = (list(profile.TOP_LEVEL_KEYS) + TYPE_NAMES + OPTION_NAMES
         + ["type", "timeout", "settings", "compression", "output_dir", "null"])
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(WORDS))
keys = st.one_of(st.sampled_from(WORDS), st.text(string.ascii_letters + "-_.", min_size=1,
                                                   max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
documents = st.dictionaries(st.sampled_from(WORDS), st.one_of(
    values, st.dictionaries(keys, st.dictionaries(keys, values, max_size=4), max_size=3)),
    max_size=5)


def one_line(exc: Exception) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text


def load_and_build(path: str, overrides=()) -> None:
    try:
        prof = profile.load(path, overrides, REG)
    except UsageError as exc:
        one_line(exc)
        return
    # A profile that validated must also build every plugin instance.
    build_instances(prof, REG, Target("127.0.0.1", 7000), dry_run=True)


@FUZZ
@given(doc=documents)
def test_generated_profile_documents(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("p") / "gen.yaml"
    path.write_text(yaml.safe_dump(doc))
    load_and_build(str(path))


@FUZZ
@given(text=st.text(max_size=200))
def test_generated_profile_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("p") / "raw.yaml"
    try:
        path.write_text(text)
    except UnicodeEncodeError:
        assume(False)
    load_and_build(str(path))


@FUZZ
@given(key=st.lists(st.sampled_from(WORDS + ["tcpdump", "fencing", "x"]), min_size=1, max_size=4),
       value=st.text(max_size=30))
def test_generated_set_overrides(key, value):
    load_and_build("default", [".".join(key) + "=" + value])


@FUZZ
@given(raw=st.text(max_size=40))
def test_generated_set_without_equals_or_empty_parts(raw):
    load_and_build("default", [raw])


@FUZZ
@given(ip=st.text(max_size=45), port=st.text(max_size=8))
def test_generated_ip_and_port(ip, port):
    assume(not ip.startswith("-") and not port.startswith("-"))
    try:
        ns = arguments.parse(["check", ip, port])
    except UsageError as exc:
        one_line(exc)
        return
    assert 1 <= ns.port <= 65535


@pytest.mark.parametrize("type_name", sorted(n for n, t in REG.types.items() if t.options))
@FUZZ
@given(data=st.data())
def test_generated_option_values(type_name, data):
    ptype = REG.types[type_name]
    specs = ptype.options
    spec = data.draw(st.sampled_from(specs))
    value = data.draw(values)
    try:
        built = options.build(ptype.cls.Options, {spec.name: value})
    except options.OptionError as exc:
        one_line(exc)
        return
    assert hasattr(built, spec.name)
