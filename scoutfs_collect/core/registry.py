"""Finding plugins and the collector, trigger and analyzer types they register.

Sources, in order:

1. The built-in plugins: the modules named in :data:`BUILTIN_PLUGINS`, imported and
   registered like any other plugin (a module with a ``@hookimpl``
   ``scoutfs_collect_register``). They need no installed metadata, so a checkout run as
   ``PYTHONPATH=CHECKOUT python -m scoutfs_collect`` has them too.
2. Third-party plugins: installed distributions with an entry point in group
   ``scoutfs_collect``. ``SCOUTFS_COLLECT_LOAD_PLUGINS`` narrows them: unset, every
   installed one loads; a comma-separated list of distribution names loads only those
   (a name that is not an installed plugin distribution is an error); empty, none.
3. ``.py`` files in ``/etc/scoutfs-collect/plugins.d/`` and each ``--plugin-dir`` (not
   affected by the variable: they are named explicitly).

Every module is registered with pluggy first; then ``scoutfs_collect_register`` is called
through pluggy's own hook caller, once per plugin in pluggy's call order (``tryfirst`` /
``trylast`` respected), with the other plugins' wrappers around it and hook-call monitoring
seeing it, and with a :class:`Register` that knows which plugin it is calling, so errors and
the ``plugins`` listing name the plugin that registered a type. A plugin that fails to
import or register is recorded in ``load_errors`` and the others still load.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import stat
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import pluggy

from scoutfs_collect.core.errors import UsageError
from scoutfs_collect.plugin import hookspecs
from scoutfs_collect.plugin.api import Analyzer, Collector, Trigger
from scoutfs_collect.plugin.options import OptionSpec, check_declaration, did_you_mean, specs
from scoutfs_collect.system.paths import etc_dir

ENTRY_POINT_GROUP = "scoutfs_collect"
OWN_DISTRIBUTION = "scoutfs-collect"
BUILTIN_LABEL = f"{OWN_DISTRIBUTION} (built-in)"
#: Comma-separated distribution names: load only these third-party plugins (empty: none).
LOAD_PLUGINS_ENV = "SCOUTFS_COLLECT_LOAD_PLUGINS"
_HOOK = "scoutfs_collect_register"
_BUILTIN_PACKAGE = "scoutfs_collect.builtin_plugins"  # the checkout's plugins/ (pyproject package-dir)

#: The built-in plugins: name (as ``plugins`` shows it) -> module.
BUILTIN_PLUGINS: Dict[str, str] = {
    "sysinfo": f"{_BUILTIN_PACKAGE}.collectors.sysinfo",
    "dmesg": f"{_BUILTIN_PACKAGE}.collectors.dmesg",
    "ftrace": f"{_BUILTIN_PACKAGE}.collectors.ftrace",
    "tcpdump": f"{_BUILTIN_PACKAGE}.collectors.tcpdump",
    "scoutfs-counters": f"{_BUILTIN_PACKAGE}.collectors.scoutfs_counters",
    "scoutfs-sim": f"{_BUILTIN_PACKAGE}.collectors.scoutfs_sim",
    "kmsg": f"{_BUILTIN_PACKAGE}.triggers.kmsg",
    "timer": f"{_BUILTIN_PACKAGE}.triggers.timer",
    "file": f"{_BUILTIN_PACKAGE}.triggers.file",
    "journal": f"{_BUILTIN_PACKAGE}.triggers.journal",
    "scoutfs-fence": f"{_BUILTIN_PACKAGE}.triggers.scoutfs_fence",
    "counter": f"{_BUILTIN_PACKAGE}.triggers.counter",
    "peer-silence": f"{_BUILTIN_PACKAGE}.triggers.peer_silence",
    **{name: f"{_BUILTIN_PACKAGE}.analyzers.{name}" for name in (
        "fence", "kernel", "memory", "counters", "clock", "coverage", "tcp", "quorum")},
}


@dataclasses.dataclass(frozen=True)
class PluginType:
    """One registered collector or trigger type and where it came from."""

    type_name: str
    kind: str  # "collector", "trigger" or "analyzer"
    cls: type
    plugin: str  # e.g. "scoutfs-collect (built-in)", "site-tools 1.2", "/etc/.../x.py"

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.cls.__doc__ or "(no documentation)")

    @property
    def options(self) -> List[OptionSpec]:
        return specs(self.cls.Options)

    def as_dict(self) -> Dict[str, object]:
        out: Dict[str, object] = {
            "type": self.type_name,
            "kind": self.kind,
            "plugin": self.plugin,
            "doc": self.doc,
            "options": [o.as_dict() for o in self.options],
        }
        if self.kind == "analyzer":
            out["sources"] = list(getattr(self.cls, "sources", ()))
        return out


class Register:
    """Handed to ``scoutfs_collect_register``: plugins add their types through it."""

    def __init__(self, registry: Registry, source: str) -> None:
        self._registry = registry
        self.source = source  # the plugin being registered, named in errors

    def add_collector(self, cls: type) -> None:
        """Register a :class:`~scoutfs_collect.plugin.api.Collector` subclass."""
        self._add(cls, Collector, "collector")

    def add_trigger(self, cls: type) -> None:
        """Register a :class:`~scoutfs_collect.plugin.api.Trigger` subclass."""
        self._add(cls, Trigger, "trigger")

    def add_analyzer(self, cls: type) -> None:
        """Register an :class:`~scoutfs_collect.plugin.api.Analyzer` subclass."""
        self._add(cls, Analyzer, "analyzer")
        from scoutfs_collect.analysis.sources import ANALYZER_KINDS

        unknown = [k for k in getattr(cls, "sources", ()) if k not in ANALYZER_KINDS]
        if unknown:
            del self._registry.types[cls.type_name]
            raise TypeError(f"{cls.__name__}: unknown source kind {unknown[0]!r} "
                            f"(one of {', '.join(ANALYZER_KINDS)})")

    def _add(self, cls: type, base: type, kind: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"{cls!r} is not a {base.__name__} subclass")
        name = getattr(cls, "type_name", "")
        if not name:
            raise TypeError(f"{cls.__name__} has no type_name")
        problem = check_declaration(cls.Options)
        if problem:
            raise TypeError(f"{cls.__name__}: {problem}")
        existing = self._registry.types.get(name)
        if existing is not None:
            first, second = sorted((existing.plugin, self.source), key=self._registry.load_order)
            raise UsageError(f"plugin type '{name}' is registered twice: by {first} and by {second}")
        self._registry.types[name] = PluginType(name, kind, cls, self.source)


class Registry:
    """All plugin types known to this run, and the plugins that failed to load."""

    def __init__(self) -> None:
        self.types: Dict[str, PluginType] = {}
        self.load_errors: List[Tuple[str, str]] = []
        self._sources: List[str] = []  # registered plugins, in loading order
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)

    def get(self, type_name: str, kind: str) -> PluginType:
        """The type of that name and kind; UsageError with a suggestion otherwise."""
        found = self.types.get(type_name)
        if found is not None and found.kind == kind:
            return found
        names = sorted(t.type_name for t in self.types.values() if t.kind == kind)
        message = f"unknown {kind} type '{type_name}'{did_you_mean(type_name, names)}"
        if found is not None:
            message = f"'{type_name}' is a {found.kind} type, not a {kind} type"
        failed = [src for src, _ in self.load_errors]
        if failed:
            message += f" (plugins that failed to load: {', '.join(failed)})"
        raise UsageError(message)

    def of_kind(self, kind: str) -> List[PluginType]:
        return sorted((t for t in self.types.values() if t.kind == kind), key=lambda t: t.type_name)

    def load_order(self, source: str) -> int:
        """Where ``source`` came in the loading order (built-ins first, plugin dirs last)."""
        return self._sources.index(source) if source in self._sources else len(self._sources)

    def add_module(self, module: ModuleType, source: str) -> None:
        """Register one plugin module with pluggy, recording failures instead of raising.
        Its types are added by :meth:`register_types`."""
        try:
            self.manager.register(module, name=source)
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            self.manager.unregister(module)
            raise UsageError(f"plugin {source}: {_describe_invalid(module, exc)}") from None
        except Exception as exc:
            self.load_errors.append((source, f"cannot register: {exc}"))
            return
        self._sources.append(source)

    def register_types(self) -> None:
        """Call ``scoutfs_collect_register`` of every registered plugin through pluggy.

        One call per plugin, in pluggy's call order, through a subset hook caller that
        leaves out the other plugins' plain implementations (wrappers stay and wrap each
        call), so each call gets a :class:`Register` naming its plugin and a plugin that
        raises is recorded without costing the others their types.
        """
        impls = getattr(self.manager.hook, _HOOK).get_hookimpls()
        plain = [i for i in impls if not (i.hookwrapper or getattr(i, "wrapper", False))]
        for impl in reversed(plain):  # pluggy calls the last of this list first
            source = self.manager.get_name(impl.plugin) or repr(impl.plugin)
            others = [i.plugin for i in plain if i.plugin is not impl.plugin]
            call = self.manager.subset_hook_caller(_HOOK, remove_plugins=others)
            try:
                call(register=Register(self, source))
            except UsageError:
                raise
            except Exception as exc:
                self.load_errors.append((source, f"{_HOOK} failed: {exc}"))


def _describe_invalid(module: ModuleType, exc: Exception) -> str:
    """pluggy's complaint in one line, naming the hook and the file it is in."""
    where = getattr(module, "__file__", None) or getattr(module, "__name__", "?")
    text = " ".join(str(exc).split())
    names = [n for n in dir(module) if n.startswith("scoutfs_collect_")]
    known = [n for n in dir(hookspecs) if n.startswith("scoutfs_collect_")]
    unknown = [n for n in names if n not in known]
    if unknown:
        return (f"{where}: unknown hook '{unknown[0]}'{did_you_mean(unknown[0], known)} "
                f"(the hooks are listed in scoutfs_collect/plugin/hookspecs.py)")
    return f"{where}: {text}"


def _normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``Site_Tools`` is ``site-tools``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _wanted_distributions(environ: Mapping[str, str]) -> Optional[List[str]]:
    """The normalized names ``SCOUTFS_COLLECT_LOAD_PLUGINS`` lists, or None (unset: all)."""
    value = environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return list(dict.fromkeys(_normalize(n.strip()) for n in value.split(",") if n.strip()))


def _entry_points(environ: Mapping[str, str]) -> Iterable[Tuple[str, importlib.metadata.EntryPoint]]:
    """The third-party plugins' entry points as ``(source, entry point)``, narrowed by
    ``SCOUTFS_COLLECT_LOAD_PLUGINS``. Entry points of scoutfs-collect itself (the metadata
    of an older install still lists the built-ins) are skipped: the built-ins load by import."""
    wanted = _wanted_distributions(environ)
    if wanted == []:
        return
    found: Dict[str, List[Tuple[str, importlib.metadata.EntryPoint]]] = {}
    seen = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or "?"
        key = _normalize(name)
        if key == OWN_DISTRIBUTION:
            continue
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or (key, ep.name) in seen:
                continue
            seen.add((key, ep.name))
            found.setdefault(key, []).append((f"{name} {dist.version}: {ep.name}", ep))
    missing = [n for n in (wanted or []) if n not in found]
    if missing:
        raise UsageError(f"{LOAD_PLUGINS_ENV}: '{missing[0]}' is not an installed distribution with "
                         f"a scoutfs_collect plugin (installed: {', '.join(sorted(found)) or 'none'})")
    for key in (wanted if wanted is not None else list(found)):
        yield from found[key]  # in the order the variable names them


def check_secure(path: Path) -> Optional[str]:
    """Why ``path`` may not be trusted as plugin code, or None: it must be owned by root
    and not writable by group or others (anyone who can write it could run code as root)."""
    try:
        st = path.stat()
    except OSError as exc:
        return f"{path}: cannot read: {exc.strerror}"
    if st.st_uid != 0:
        return f"{path}: refused: owned by uid {st.st_uid}, not root (chown root {path})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path}: refused: writable by group or others (chmod go-w {path})"
    return None


def _load_file(path: Path) -> ModuleType:
    module_name = f"scoutfs_collect_site.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load(plugin_dirs: Iterable[str] = ()) -> Registry:
    """Load every plugin source and return the registry.

    Raises UsageError for an insecure plugin directory or file, a type name registered
    twice and a name in ``SCOUTFS_COLLECT_LOAD_PLUGINS`` that is not installed; import
    errors of single plugins are kept in ``load_errors``.
    """
    registry = Registry()
    sources: List[Tuple[str, Callable[[], ModuleType]]] = [
        (f"{BUILTIN_LABEL}: {name}", functools.partial(importlib.import_module, module))
        for name, module in BUILTIN_PLUGINS.items()]
    sources += [(source, ep.load) for source, ep in _entry_points(os.environ)]
    sources += [(str(path), functools.partial(_load_file, path)) for path in _site_files(plugin_dirs)]
    for source, import_it in sources:
        try:
            module = import_it()
        except Exception as exc:
            registry.load_errors.append((source, f"import failed: {type(exc).__name__}: {exc}"))
            continue
        registry.add_module(module, source)
    registry.register_types()
    return registry


def _site_files(plugin_dirs: Iterable[str]) -> List[Path]:
    """The ``.py`` files of the system plugin directory and each ``--plugin-dir``, each
    checked to be root's alone (UsageError otherwise)."""
    dirs: List[Path] = []
    system_dir = etc_dir() / "plugins.d"
    if system_dir.is_dir():
        dirs.append(system_dir)
    for d in plugin_dirs:
        p = Path(d)
        if not p.is_dir():
            raise UsageError(f"--plugin-dir {d}: not a directory")
        dirs.append(p)
    files: List[Path] = []
    for d in dirs:
        problem = check_secure(d)
        if problem:
            raise UsageError(problem)
        for path in sorted(d.glob("*.py")):
            problem = check_secure(path)
            if problem:
                raise UsageError(problem)
            files.append(path)
    return files
