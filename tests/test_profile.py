"""Profiles: extends, null removal, --set, positions in errors, and the shipped profiles."""

from __future__ import annotations

import pytest

from scoutfs_collect.core import profile, registry
from scoutfs_collect.core.errors import UsageError


@pytest.fixture(scope="module")
def reg():
    return registry.load()


@pytest.fixture
def etc(tmp_path, monkeypatch):
    d = tmp_path / "etc"
    (d / "profiles").mkdir(parents=True)
    monkeypatch.setenv("SCOUTFS_COLLECT_ETC", str(d))
    return d


@pytest.mark.parametrize("name", profile.builtin_profiles())
def test_every_builtin_profile_validates_against_the_builtin_plugins(name, reg):
    assert not reg.load_errors, reg.load_errors
    prof = profile.load(name, registry=reg)
    assert prof.description
    assert prof.collectors or prof.triggers


def test_builtin_profiles_include_default_demo_and_a_swapped_trigger():
    assert {"default", "demo", "fence-watch"} <= set(profile.builtin_profiles())
    fence = profile.load("fence-watch")
    assert [t.type_name for t in fence.triggers] == ["scoutfs-fence"]
    default = profile.load("default")
    assert {t.type_name for t in default.triggers} == {"kmsg", "scoutfs-fence", "peer-silence"}
    assert [c.name for c in fence.collectors] == [c.name for c in default.collectors]


def test_site_profile_extends_merges_and_null_removes(etc):
    (etc / "profiles" / "site.yaml").write_text(
        "extends: default\n"
        "settings: {compression: xz}\n"
        "collectors:\n"
        "  tcpdump: {interface: ib0, file_count: 4}\n"
        "  ftrace: null\n"
        "  tcpdump-eth: {type: tcpdump, interface: eth0}\n")
    prof = profile.load("site")
    names = [c.name for c in prof.collectors]
    assert "ftrace" not in names and "tcpdump-eth" in names
    tcpdump = next(c for c in prof.collectors if c.name == "tcpdump")
    assert tcpdump.options == {"interface": "ib0", "file_size_mb": 50, "file_count": 4}
    assert prof.settings.compression == "xz"
    assert prof.settings.output_dir == "."  # inherited


def test_site_profile_of_the_same_name_can_extend_the_builtin(etc):
    (etc / "profiles" / "default.yaml").write_text("extends: default\nsettings: {min_free_mb: 1}\n")
    prof = profile.load("default")
    assert prof.source.startswith(str(etc))
    assert prof.settings.min_free_mb == 1
    assert any(c.name == "tcpdump" for c in prof.collectors)


def test_extends_loop_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: ./b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: ./a.yaml\n")
    with pytest.raises(UsageError, match="loops back"):
        profile.load(str(tmp_path / "a.yaml"))


def test_set_overrides_parse_yaml_scalars_and_null_removes():
    prof = profile.load("default", ["collectors.tcpdump.file_count=4",
                                    "settings.post_trigger_seconds=2.5",
                                    "triggers.fencing=null"])
    tcpdump = next(c for c in prof.collectors if c.name == "tcpdump")
    assert tcpdump.options["file_count"] == 4
    assert prof.settings.post_trigger_seconds == 2.5
    assert [t.name for t in prof.triggers] == ["fence-request", "peer-silence"]


def test_error_in_extended_file_points_at_that_file(tmp_path, reg):
    base = tmp_path / "base.yaml"
    base.write_text("collectors:\n  tcpdump:\n    file_cout: 3\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {base}\nsettings: {{compression: gz}}\n")
    with pytest.raises(UsageError) as err:
        profile.load(str(child), registry=reg)
    assert str(err.value) == (f"{base}:3:5: collectors.tcpdump: unknown option 'file_cout' "
                              "(did you mean 'file_count'?)")


def test_duplicate_key_is_an_error(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("collectors:\n  sysinfo: {}\n  sysinfo: {}\n")
    with pytest.raises(UsageError, match=r"dup.yaml:3:3: collectors.sysinfo: duplicate key"):
        profile.load(str(p))


def test_instance_names_must_be_safe_directory_names(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("collectors:\n  '../etc': {type: sysinfo}\n")
    with pytest.raises(UsageError, match="instance names are letters"):
        profile.load(str(p))


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("description: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(UsageError, match="evil.yaml:1:14"):
        profile.load(str(p))


def test_reserved_timeout_key(tmp_path, reg):
    p = tmp_path / "t.yaml"
    for bad in ("-1", ".nan", ".inf"):
        p.write_text(f"triggers:\n  t: {{type: timer, timeout: {bad}}}\n")
        with pytest.raises(UsageError, match="timeout must be a finite number of seconds above 0"):
            profile.load(str(p), registry=reg)
    p.write_text("triggers:\n  t: {type: timer, timeout: 5}\n")
    assert profile.load(str(p), registry=reg).triggers[0].timeout == 5.0


def test_the_readme_profile_examples_are_valid(tmp_path, reg):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert blocks
    for n, block in enumerate(blocks):
        path = tmp_path / f"readme{n}.yaml"
        path.write_text(block)
        prof = profile.load(str(path), registry=reg)
        assert prof.collectors or prof.triggers


def test_a_collector_and_a_trigger_may_not_share_an_instance_name(cli, tmp_path):
    """Both used to load and the manifest kept only one: now the profile is refused."""
    profile_file = cli.profile("collectors:\n"
                               "  dmesg: {}\n"
                               "  watch: {type: sysinfo}\n"
                               "triggers:\n"
                               "  fencing: {type: kmsg, pattern: fencing}\n"
                               "  watch: {type: timer, after: 5}\n")
    for args in (["validate", profile_file], ["check", "--profile", profile_file, "127.0.0.1", "7000"]):
        result = cli.run(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [
            f"error: {profile_file}:6:3: triggers.watch: the name 'watch' is also a collector "
            f"instance (collectors.watch at {profile_file}:3:3); instance names must be unique "
            "across collectors and triggers"], result.stderr
