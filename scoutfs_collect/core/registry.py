"""Finding plugins and the collector and trigger types they register.

Sources, in order: installed distributions with an entry point in group
``scoutfs_collect`` (the built-in plugins are registered this way too), then ``.py``
files in ``/etc/scoutfs-collect/plugins.d/`` and each ``--plugin-dir``. A plugin that
fails to import or register is recorded in ``load_errors`` and the others still load.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import inspect
import stat
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterable, List, Optional, Tuple

import pluggy

from scoutfs_collect.core.errors import UsageError
from scoutfs_collect.plugin import hookspecs
from scoutfs_collect.plugin.api import Collector, Trigger
from scoutfs_collect.plugin.options import OptionSpec, check_declaration, did_you_mean, specs
from scoutfs_collect.system.paths import etc_dir

ENTRY_POINT_GROUP = "scoutfs_collect"
OWN_DISTRIBUTION = "scoutfs-collect"


@dataclasses.dataclass(frozen=True)
class PluginType:
    """One registered collector or trigger type and where it came from."""

    type_name: str
    kind: str  # "collector" or "trigger"
    cls: type
    plugin: str  # e.g. "scoutfs-collect (built-in)", "site-tools 1.2", "/etc/.../x.py"

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.cls.__doc__ or "(no documentation)")

    @property
    def options(self) -> List[OptionSpec]:
        return specs(self.cls.Options)

    def as_dict(self) -> Dict[str, object]:
        return {
            "type": self.type_name,
            "kind": self.kind,
            "plugin": self.plugin,
            "doc": self.doc,
            "options": [o.as_dict() for o in self.options],
        }


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
            raise UsageError(
                f"plugin type '{name}' is registered twice: by {existing.plugin} "
                f"and by {self.source}"
            )
        self._registry.types[name] = PluginType(name, kind, cls, self.source)


class Registry:
    """All plugin types known to this run, and the plugins that failed to load."""

    def __init__(self) -> None:
        self.types: Dict[str, PluginType] = {}
        self.load_errors: List[Tuple[str, str]] = []
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

    def add_module(self, module: ModuleType, source: str) -> None:
        """Register one plugin module's types, recording failures instead of raising."""
        try:
            self.manager.register(module, name=source)
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            self.manager.unregister(module)
            raise UsageError(f"plugin {source}: {_describe_invalid(module, exc)}") from None
        except Exception as exc:
            self.load_errors.append((source, f"cannot register: {exc}"))
            return
        register = Register(self, source)
        for impl in self.manager.hook.scoutfs_collect_register.get_hookimpls():
            if impl.plugin is not module:
                continue
            try:
                impl.function(register=register)
            except UsageError:
                raise
            except Exception as exc:
                self.load_errors.append((source, f"scoutfs_collect_register failed: {exc}"))


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


def _entry_points() -> Iterable[Tuple[str, importlib.metadata.EntryPoint]]:
    seen = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or (name, ep.name) in seen:
                continue
            seen.add((name, ep.name))
            if name == OWN_DISTRIBUTION:
                label = f"{OWN_DISTRIBUTION} (built-in)"
            else:
                label = f"{name} {dist.version}"
            yield f"{label}: {ep.name}", ep


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

    Raises UsageError for an insecure plugin directory or file and for a type name
    registered twice; import errors of single plugins are kept in ``load_errors``.
    """
    registry = Registry()
    for source, ep in _entry_points():
        try:
            module = ep.load()
        except Exception as exc:
            registry.load_errors.append((source, f"import failed: {type(exc).__name__}: {exc}"))
            continue
        registry.add_module(module, source)

    dirs: List[Path] = []
    system_dir = etc_dir() / "plugins.d"
    if system_dir.is_dir():
        dirs.append(system_dir)
    for d in plugin_dirs:
        p = Path(d)
        if not p.is_dir():
            raise UsageError(f"--plugin-dir {d}: not a directory")
        dirs.append(p)
    for d in dirs:
        problem = check_secure(d)
        if problem:
            raise UsageError(problem)
        for path in sorted(d.glob("*.py")):
            problem = check_secure(path)
            if problem:
                raise UsageError(problem)
            source = str(path)
            try:
                module = _load_file(path)
            except Exception as exc:
                registry.load_errors.append(
                    (source, f"import failed: {type(exc).__name__}: {exc}")
                )
                continue
            registry.add_module(module, source)
    return registry

