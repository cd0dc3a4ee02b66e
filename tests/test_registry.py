"""Plugin loading: built-ins by import, installed plugins (SCOUTFS_COLLECT_LOAD_PLUGINS), site
plugins from a directory, failures, and the register hook called through pluggy."""

from __future__ import annotations

import importlib
import json
import os
import signal
import textwrap
from pathlib import Path

from scoutfs_collect.core import registry
from scoutfs_collect.plugin import hookspecs
from tests.support.cli import finish
from tests.support.helpers import extract

HERE = Path(__file__).resolve().parent

SITE_PLUGIN = textwrap.dedent('''\
    """A site plugin as the README shows it."""
    import dataclasses
    from pathlib import Path
    from scoutfs_collect import Collector, hookimpl, option

    class MultipathState(Collector):
        """Copies a site file at start and at stop."""
        type_name = "site-file"

        @dataclasses.dataclass
        class Options:
            path: str = option("/proc/loadavg", "File to copy.")

        def start(self):
            self.first = Path(self.options.path).read_text()

        def finalize(self):
            (self.ctx.workdir / "start.txt").write_text(self.first)
            (self.ctx.workdir / "stop.txt").write_text(Path(self.options.path).read_text())

    @hookimpl
    def scoutfs_collect_register(register):
        register.add_collector(MultipathState)
''')


def site_dir(tmp_path, files):
    d = tmp_path / "plugins.d"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    for name, text in files.items():
        (d / name).write_text(text)
        os.chmod(d / name, 0o644)
    return d


def test_builtins_register_by_import_with_the_hook_any_plugin_uses():
    reg = registry.load()
    assert not reg.load_errors
    modules = {f"scoutfs_collect.builtin_plugins.{p.parent.name}.{p.stem}"
               for p in (HERE.parent / "plugins").glob("*/*.py") if p.stem != "__init__"}
    assert set(registry.BUILTIN_PLUGINS.values()) == modules  # a new built-in is listed
    for name, module in registry.BUILTIN_PLUGINS.items():
        plugin = reg.manager.get_plugin(f"scoutfs-collect (built-in): {name}")
        assert plugin is importlib.import_module(module)
        assert reg.manager.hook.scoutfs_collect_register.get_hookimpls()  # a pluggy hookimpl
    expected = {"sysinfo", "dmesg", "ftrace", "tcpdump", "scoutfs-counters", "scoutfs-sim"}
    assert expected <= {t.type_name for t in reg.of_kind("collector")}
    assert {"kmsg", "timer", "file", "journal", "scoutfs-fence", "counter"} <= {
        t.type_name for t in reg.of_kind("trigger")}
    for t in reg.types.values():
        assert t.plugin.startswith("scoutfs-collect (built-in)")
        assert t.cls.__doc__ and len(t.doc) > 40, t.type_name
        for o in t.options:
            assert o.doc, f"{t.type_name}.{o.name} has no doc"


def test_site_plugin_from_a_directory_runs_and_lands_in_the_archive(cli, tmp_path):
    d = site_dir(tmp_path, {"site_file.py": SITE_PLUGIN})
    listed = cli.run("plugins", "--json", "--plugin-dir", str(d))
    assert listed.returncode == 0, listed.stderr
    entry = next(p for p in json.loads(listed.stdout) if p["type"] == "site-file")
    assert entry["kind"] == "collector" and entry["plugin"] == str(d / "site_file.py")
    assert entry["options"][0]["name"] == "path" and entry["options"][0]["doc"] == "File to copy."

    profile = cli.profile("collectors:\n  mp: {type: site-file, path: /proc/version}\n"
                          "triggers:\n  never: {type: test-never}\n")
    proc = cli.start("--plugin-dir", str(d), "--plugin-dir", str(cli.plugin_dir()),
                     "--profile", str(profile), "--output-dir", str(cli.out),
                     "--events-file", str(cli.events), "127.0.0.1", "7002")
    cli.wait_event("armed", proc)
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == 0, err
    top = extract(out.split("archive: ")[-1].strip(), tmp_path / "x")
    assert (top / "mp" / "stop.txt").read_text().startswith("Linux version")


def test_world_writable_plugin_dir_is_refused(cli, tmp_path):
    d = site_dir(tmp_path, {"site_file.py": SITE_PLUGIN})
    os.chmod(d, 0o777)
    result = cli.run("plugins", "--plugin-dir", str(d))
    assert result.returncode == 2
    assert f"{d}: refused: writable by group or others (chmod go-w {d})" in result.stderr
    assert "Traceback" not in result.stderr


def test_plugin_file_not_owned_by_root_is_refused(cli, tmp_path):
    d = site_dir(tmp_path, {"site_file.py": SITE_PLUGIN})
    os.chown(d / "site_file.py", 1000, 1000)
    result = cli.run("plugins", "--plugin-dir", str(d))
    assert result.returncode == 2
    assert "site_file.py: refused: owned by uid 1000, not root" in result.stderr


def test_broken_plugin_is_reported_by_name_and_the_rest_load(cli, tmp_path):
    d = site_dir(tmp_path, {"broken.py": "import not_a_module_anywhere\n",
                            "site_file.py": SITE_PLUGIN})
    result = cli.run("plugins", "--json", "--plugin-dir", str(d))
    assert result.returncode == 0
    assert f"plugin {d / 'broken.py'} not loaded: import failed: ModuleNotFoundError" in result.stderr
    types = {p["type"] for p in json.loads(result.stdout)}
    assert {"site-file", "tcpdump", "ftrace"} <= types


def test_misspelt_hook_is_an_error_naming_the_file_and_the_hook(cli, tmp_path):
    typo = SITE_PLUGIN.replace("def scoutfs_collect_register(", "def scoutfs_collect_regster(")
    assert typo != SITE_PLUGIN
    d = site_dir(tmp_path, {"typo.py": typo})
    result = cli.run("plugins", "--plugin-dir", str(d))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert str(d / "typo.py") in line
    assert "unknown hook 'scoutfs_collect_regster' (did you mean 'scoutfs_collect_register'?)" in line


def test_duplicate_type_name_names_both_plugins(cli, tmp_path):
    dup = SITE_PLUGIN.replace('type_name = "site-file"', 'type_name = "tcpdump"')
    d = site_dir(tmp_path, {"mydump.py": dup})
    result = cli.run("plugins", "--plugin-dir", str(d))
    assert result.returncode == 2
    assert "plugin type 'tcpdump' is registered twice: by scoutfs-collect (built-in)" in result.stderr
    assert str(d / "mydump.py") in result.stderr


def test_system_plugin_dir_is_loaded(cli, tmp_path):
    etc = cli.tmp / "etc" / "plugins.d"
    etc.mkdir(parents=True, mode=0o755)
    (etc / "site_file.py").write_text(SITE_PLUGIN)
    os.chmod(etc, 0o755)
    os.chmod(etc / "site_file.py", 0o644)
    result = cli.run("plugins")
    assert result.returncode == 0
    assert "site-file (collector, from" in result.stdout


def test_plugins_text_shows_docs_and_options(cli):
    result = cli.run("plugins")
    assert result.returncode == 0
    assert "tcpdump (collector, from scoutfs-collect (built-in)" in result.stdout
    assert "file_count (int, default 2)" in result.stdout


def test_every_hookspec_is_documented_and_called_in_a_real_run(cli, tmp_path):
    names = {n for n in dir(hookspecs) if n.startswith("scoutfs_collect_")}
    assert names == {"scoutfs_collect_register", "scoutfs_collect_run_started",
                     "scoutfs_collect_triggered", "scoutfs_collect_archive_written"}
    for name in names:
        assert getattr(hookspecs, name).__doc__
    hooklog = tmp_path / "hooks.jsonl"
    cli.env["SCOUTFS_COLLECT_TEST_HOOKLOG"] = str(hooklog)
    profile = cli.profile("collectors:\n  m: {type: test-marker}\n"
                          "triggers:\n  t: {type: timer, after: 0.2}\n")
    result = cli.run("--plugin-dir", str(cli.plugin_dir()), "--profile", str(profile),
                     "--output-dir", str(cli.out), "127.0.0.1", "7003")
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in hooklog.read_text().splitlines()]
    assert [c["hook"] for c in calls] == ["run_started", "triggered", "archive_written"]
    assert calls[0]["run"]["target"] == {"ip": "127.0.0.1", "port": 7003}
    assert calls[1]["trigger"]["name"] == "t" and calls[1]["trigger"]["type"] == "timer"
    assert result.stdout.strip().endswith(calls[2]["path"])


def readme_plugin() -> str:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Writing a site plugin", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_site_plugin_example_works(cli, tmp_path):
    d = site_dir(tmp_path, {"multipath.py": readme_plugin()})
    profile = cli.profile("collectors:\n  multipath: {command: echo}\n"
                          "triggers:\n  t: {type: timer, after: 0.2}\n")
    result = cli.run("--plugin-dir", str(d), "--profile", str(profile),
                     "--output-dir", str(cli.out), "127.0.0.1", "7004")
    assert result.returncode == 0, result.stderr
    top = extract(result.stdout.split("archive: ")[-1].strip(), tmp_path / "x")
    assert (top / "multipath" / "multipath-start.txt").read_text() == "-ll\n"
    assert (top / "multipath" / "multipath-stop.txt").read_text() == "-ll\n"
    missing = cli.profile("collectors:\n  multipath: {command: no-such-multipath}\n", "m.yaml")
    check = cli.run("check", "--plugin-dir", str(d), "--profile", str(missing),
                    "--output-dir", str(cli.out), "127.0.0.1", "7004")
    assert check.returncode == 2
    assert "multipath is not installed" in check.stderr
    assert "fix: dnf install device-mapper-multipath" in check.stderr


def test_site_plugins_need_only_the_public_api():
    """The README example and the test kit import nothing but scoutfs_collect's exports,
    so they keep working when internal modules move."""
    import ast

    import scoutfs_collect

    for name, source in (("README example", readme_plugin()),
                         ("testkit", (HERE / "site_plugins" / "testkit.py").read_text())):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scoutfs_collect"):
                assert node.module == "scoutfs_collect", (name, node.module)
                assert {a.name for a in node.names} <= set(scoutfs_collect.__all__), name
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("scoutfs_collect.") for a in node.names), name
    for public in scoutfs_collect.__all__:
        if public not in ("__version__", "FireCallback"):  # a string and a type alias
            assert getattr(scoutfs_collect, public).__doc__, public


def test_every_builtin_collector_cleanup_is_safe_without_start(tmp_path):
    """The runner calls cleanup() on every exit path, also when start() never ran."""
    from scoutfs_collect.plugin.api import PluginContext, Target
    from scoutfs_collect.plugin.options import build

    for ptype in registry.load().of_kind("collector"):
        ctx = PluginContext(name=ptype.type_name, type_name=ptype.type_name,
                            target=Target("127.0.0.1", 7005), workdir=tmp_path / ptype.type_name)
        plugin = ptype.cls(ctx, build(ptype.cls.Options, {}))
        plugin.cleanup()
        plugin.cleanup()  # twice: idempotent
        assert ctx.failures == [], ptype.type_name


# --- the register hook goes through pluggy ------------------------------------------------

AUDIT_PLUGIN = textwrap.dedent('''\
    """Wraps every plugin's registration and writes down whose it was."""
    import os
    from scoutfs_collect import hookimpl

    @hookimpl(hookwrapper=True)
    def scoutfs_collect_register(register):
        yield
        with open(os.environ["AUDIT_LOG"], "a") as f:
            f.write(register.source + "\\n")
''')


def test_register_hook_runs_through_pluggy_wrappers_and_order(cli, tmp_path):
    early = SITE_PLUGIN.replace('"site-file"', '"site-early"').replace(
        "@hookimpl\n", "@hookimpl(tryfirst=True)\n")
    late = SITE_PLUGIN.replace('"site-file"', '"site-late"').replace(
        "@hookimpl\n", "@hookimpl(trylast=True)\n")
    d = site_dir(tmp_path, {"audit.py": AUDIT_PLUGIN, "early.py": early, "late.py": late,
                            "site_file.py": SITE_PLUGIN})
    cli.env["AUDIT_LOG"] = str(tmp_path / "audit.log")
    listed = cli.run("plugins", "--json", "--plugin-dir", str(d))
    assert listed.returncode == 0, listed.stderr
    by_type = {p["type"]: p["plugin"] for p in json.loads(listed.stdout)}
    assert by_type["site-early"] == str(d / "early.py") and by_type["site-late"] == str(d / "late.py")
    audited = (tmp_path / "audit.log").read_text().splitlines()
    # The wrapper saw every plugin's call, each with a Register naming that plugin ...
    assert sorted(audited) == sorted(set(by_type.values()))
    # ... in pluggy's order: tryfirst first, trylast last, the rest newest first.
    assert audited[0] == str(d / "early.py") and audited[-1] == str(d / "late.py")
    assert audited[1] == str(d / "site_file.py")


def test_register_calls_are_seen_by_hook_call_monitoring():
    import types

    seen = []
    reg = registry.Registry()
    reg.manager.add_hookcall_monitoring(
        lambda name, impls, kwargs: seen.append((name, [i.plugin_name for i in impls],
                                                 kwargs["register"].source)),
        lambda outcome, name, impls, kwargs: None)
    for source, type_name in (("one", "t-one"), ("two", "t-two")):
        module = types.ModuleType(source)
        exec(textwrap.dedent(f'''\
            from scoutfs_collect import Collector, hookimpl

            class Mine(Collector):
                """Records nothing."""
                type_name = "{type_name}"

            @hookimpl
            def scoutfs_collect_register(register):
                register.add_collector(Mine)
            '''), module.__dict__)
        reg.add_module(module, source)
    reg.register_types()
    assert seen == [("scoutfs_collect_register", ["two"], "two"),
                    ("scoutfs_collect_register", ["one"], "one")]
    assert (reg.get("t-one", "collector").plugin, reg.get("t-two", "collector").plugin) == ("one", "two")


def test_a_register_hook_that_raises_is_reported_by_name_and_the_rest_load(cli, tmp_path):
    raising = SITE_PLUGIN.replace("    register.add_collector(MultipathState)",
                                  "    raise RuntimeError('no licence file')")
    d = site_dir(tmp_path, {"raising.py": raising,
                            "other.py": SITE_PLUGIN.replace('"site-file"', '"site-other"')})
    result = cli.run("plugins", "--json", "--plugin-dir", str(d))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"warning: plugin {d / 'raising.py'} not loaded: scoutfs_collect_register failed: no licence file"]
    assert {"site-other", "tcpdump"} <= {p["type"] for p in json.loads(result.stdout)}


# --- installed plugins and SCOUTFS_COLLECT_LOAD_PLUGINS -----------------------------------

def installed_plugins(where: Path) -> Path:
    """Two installed plugin distributions as pip lays them out (a dist-info with METADATA and
    entry_points.txt, and the module), and a stale scoutfs-collect metadata that still lists
    a built-in as an entry point (an older install): a directory to put on PYTHONPATH."""
    where.mkdir()
    dists = {"site-tools": ("Site_Tools", "1.2", "site_tools_plugin", "site-tools-file"),
             "acme-scoutfs": ("acme-scoutfs", "0.3", "acme_plugin", "acme-file")}
    for dist, version, module, type_name in dists.values():
        info = where / f"{dist}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[scoutfs_collect]\n{type_name} = {module}\n")
        (where / f"{module}.py").write_text(SITE_PLUGIN.replace('"site-file"', f'"{type_name}"'))
    stale = where / "scoutfs_collect-0.0.1.dist-info"
    stale.mkdir()
    (stale / "METADATA").write_text("Metadata-Version: 2.1\nName: scoutfs-collect\nVersion: 0.0.1\n")
    (stale / "entry_points.txt").write_text(
        "[scoutfs_collect]\nsysinfo = scoutfs_collect.builtin_plugins.collectors.sysinfo\n")
    return where


def test_load_plugins_variable_narrows_the_installed_plugins(cli, tmp_path):
    cli.env["PYTHONPATH"] = str(installed_plugins(tmp_path / "site-packages"))
    builtins = set(registry.BUILTIN_PLUGINS)  # each built-in registers the type of its name

    def listed(value):
        if value is None:
            cli.env.pop("SCOUTFS_COLLECT_LOAD_PLUGINS", None)
        else:
            cli.env["SCOUTFS_COLLECT_LOAD_PLUGINS"] = value
        result = cli.run("plugins", "--json")
        assert result.returncode == 0 and result.stderr == "", result.stderr
        return {p["type"]: p["plugin"] for p in json.loads(result.stdout)}

    everything = listed(None)
    assert everything["site-tools-file"] == "Site_Tools 1.2: site-tools-file"
    assert everything["acme-file"] == "acme-scoutfs 0.3: acme-file"
    assert set(everything) == builtins | {"site-tools-file", "acme-file"}
    assert set(listed("acme-scoutfs")) == builtins | {"acme-file"}
    assert set(listed(" site-tools , Acme_Scoutfs ")) == builtins | {"site-tools-file", "acme-file"}
    assert set(listed("")) == builtins

    cli.env["SCOUTFS_COLLECT_LOAD_PLUGINS"] = "acme-scoutfs,no-such-plugin"
    result = cli.run("plugins")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: SCOUTFS_COLLECT_LOAD_PLUGINS: 'no-such-plugin' is not an installed distribution "
        "with a scoutfs_collect plugin (installed: acme-scoutfs, site-tools)"]
