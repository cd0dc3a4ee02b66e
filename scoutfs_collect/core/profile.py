"""Profiles: which collectors and triggers a run uses, with which options.

A profile is a YAML mapping::

    description: what this profile is for
    extends: default              # optional: deep-merge over another profile
    settings: {output_dir: ., compression: zstd}
    collectors:
      tcpdump: {interface: any}   # instance name; type defaults to the name
      tcpdump-ib: {type: tcpdump, interface: ib0}
    triggers:
      fencing: {type: kmsg, pattern: 'reconnect timed out, fencing'}

With ``extends`` mappings merge key by key and ``name: null`` removes an inherited
entry. Every error names the file, line and column and the key path.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from scoutfs_collect import profiles as _builtin_profiles
from scoutfs_collect.core.errors import UsageError
from scoutfs_collect.plugin.options import NoOptions, OptionError, build, did_you_mean, option
from scoutfs_collect.system.paths import etc_dir

KeyPath = Tuple[str, ...]
TOP_LEVEL_KEYS = ("description", "extends", "settings", "collectors", "triggers")
RESERVED_INSTANCE_KEYS = ("type", "timeout")
INSTANCE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
BUILTIN_DIR = Path(_builtin_profiles.__file__).resolve().parent


@dataclasses.dataclass
class Settings:
    """Run-wide settings (profile key ``settings``)."""

    output_dir: str = option(".", "Directory for the work dir and the archive (not on scoutfs).")
    post_trigger_seconds: float = option(
        0.0, "Keep recording this long after a trigger fires before stopping (0: stop at once)."
    )
    compression: str = option("zstd", "Archive compression.", choices=("zstd", "xz", "gz"))
    phase_timeout: float = option(30.0, "Seconds each plugin phase may take before it is abandoned.")
    min_free_mb: int = option(
        256, "Stop and pack when free space in output_dir falls below this many MiB."
    )
    keep_workdir: bool = option(False, "Keep the work dir after the archive is written.")
    status_interval: float = option(
        300.0, "Seconds between status log lines when not on a terminal."
    )
    sync_interval: float = option(
        1.0, "While armed, every this many seconds the core fdatasyncs the files collectors "
             "stream (pcap, followed kernel log, counter series), so a sudden power-off loses "
             "at most about that much; 0 turns it off."
    )


@dataclasses.dataclass
class InstanceSpec:
    """One configured collector or trigger instance, as the profile gave it."""

    name: str
    kind: str  # "collector" or "trigger"
    type_name: str
    timeout: Optional[float]
    options: Dict[str, Any]
    where: str  # "file:line:col" of the instance's key


@dataclasses.dataclass
class Profile:
    """A resolved profile: merged over what it extends, ``--set`` applied."""

    name: str
    source: str
    description: str
    settings: Settings
    collectors: List[InstanceSpec]
    triggers: List[InstanceSpec]
    document: Dict[str, Any]


class _Document:
    """A YAML document's data plus the file:line:col of every key."""

    def __init__(self, data: Dict[str, Any], positions: Dict[KeyPath, str]) -> None:
        self.data = data
        self.positions = positions

    def where(self, path: KeyPath, fallback: str = "") -> str:
        for n in range(len(path), 0, -1):
            found = self.positions.get(path[:n])
            if found:
                return found
        return fallback


def _position(source: str, mark: Any) -> str:
    return f"{source}:{mark.line + 1}:{mark.column + 1}"


def _parse(text: str, source: str) -> _Document:
    positions: Dict[KeyPath, str] = {}
    bad = re.search("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]",
                    text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise UsageError(f"{source}:{line}:{column}: YAML syntax error: "
                         f"character U+{ord(bad.group()):04X} is not allowed")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()

        def convert(n: Any, path: KeyPath) -> Any:
            if isinstance(n, (yaml.MappingNode, yaml.SequenceNode)) and n.tag not in PLAIN_TAGS:
                raise UsageError(f"{_position(source, n.start_mark)}: "
                                 f"{'.'.join(path) or 'profile'}: YAML tag {n.tag} is not allowed")
            if isinstance(n, yaml.MappingNode):
                loader.flatten_mapping(n)
                out: Dict[str, Any] = {}
                for key_node, value_node in n.value:
                    key = loader.construct_object(key_node, deep=True)
                    if not isinstance(key, (str, int, float)) or isinstance(key, bool):
                        raise UsageError(
                            f"{_position(source, key_node.start_mark)}: "
                            f"{'.'.join(path) or 'profile'}: keys must be names"
                        )
                    key = str(key)
                    if key in out:
                        raise UsageError(
                            f"{_position(source, key_node.start_mark)}: "
                            f"{'.'.join(path + (key,))}: duplicate key"
                        )
                    positions[path + (key,)] = _position(source, key_node.start_mark)
                    out[key] = convert(value_node, path + (key,))
                return out
            if isinstance(n, yaml.SequenceNode):
                return [convert(v, path) for v in n.value]
            return loader.construct_object(n, deep=True)

        data = convert(node, ()) if node is not None else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        place = _position(source, mark) if mark else source
        raise UsageError(f"{place}: YAML syntax error: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())
        raise UsageError(f"{source}: YAML error: {message}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise UsageError(f"{source}:1:1: a profile must be a mapping of keys to values")
    return _Document(data, positions)


def builtin_profiles() -> List[str]:
    """Names of the profiles shipped with scoutfs-collect."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def site_profiles() -> List[str]:
    """Names of the profiles in /etc/scoutfs-collect/profiles/."""
    return sorted(p.stem for p in (etc_dir() / "profiles").glob("*.yaml"))


def locate(name: str) -> Path:
    """The file of profile ``name``: a path if it has a ``/`` or ends in ``.yaml``,
    else the site directory, then the built-in profiles."""
    if "/" in name or name.endswith(".yaml"):
        return Path(name)
    for directory in (etc_dir() / "profiles", BUILTIN_DIR):
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted(set(builtin_profiles()) | set(site_profiles()))
    raise UsageError(
        f"--profile {name}: no such profile{did_you_mean(name, known)}; "
        f"known: {', '.join(known)}"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such profile file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None


def _merge(base: _Document, over: _Document) -> _Document:
    def merge(a: Dict[str, Any], b: Dict[str, Any], path: KeyPath) -> Dict[str, Any]:
        out = dict(a)
        for key, value in b.items():
            if value is None and path + (key,) != ("description",):
                out.pop(key, None)
            elif isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value, path + (key,))
            else:
                out[key] = value
        return out

    positions = dict(base.positions)
    positions.update(over.positions)
    return _Document(merge(base.data, over.data, ()), positions)


def _load_chain(path: Path, seen: Tuple[str, ...] = ()) -> _Document:
    key = str(path.resolve())
    if key in seen:
        raise UsageError(f"{path}: 'extends' loops back to itself")
    doc = _parse(_read(path), str(path))
    parent = doc.data.pop("extends", None)
    if parent is None:
        return doc
    if not isinstance(parent, str):
        raise UsageError(f"{doc.where(('extends',))}: extends: must be a profile name")
    parent_path = locate(parent) if "/" in parent or parent.endswith(".yaml") else None
    if parent_path is None:
        # A site profile may extend the built-in profile of the same name.
        candidates = [etc_dir() / "profiles" / f"{parent}.yaml", BUILTIN_DIR / f"{parent}.yaml"]
        parent_path = next(
            (c for c in candidates if c.is_file() and str(c.resolve()) != key), None
        )
        if parent_path is None:
            raise UsageError(f"{doc.where(('extends',))}: extends: no profile named '{parent}'")
    elif not parent_path.is_absolute():
        parent_path = path.parent / parent_path
    return _merge(_load_chain(parent_path, seen + (key,)), doc)


def parse_override(text: str) -> Tuple[KeyPath, Any]:
    """``a.b.c=VALUE`` from ``--set``; VALUE is parsed as a YAML scalar."""
    if "=" not in text:
        raise UsageError(f"--set {text}: expected DOTTED.KEY=VALUE")
    key, _, raw = text.partition("=")
    path = tuple(key.strip().split("."))
    if not all(path):
        raise UsageError(f"--set {text}: empty part in key '{key}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"--set {text}: value is not valid YAML: {reason}") from None
    return path, value


def _apply_override(doc: _Document, text: str) -> None:
    path, value = parse_override(text)
    node = doc.data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UsageError(f"--set {text}: '{part}' is not a mapping")
        node = child
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    doc.positions[path] = f"--set {text}"


def load(name: str, overrides: Sequence[str] = (), registry: Any = None) -> Profile:
    """Resolve profile ``name`` and validate it (against ``registry`` when given)."""
    path = locate(name)
    doc = _load_chain(path)
    for text in overrides:
        _apply_override(doc, text)
    return _validate(doc, name, str(path), registry)


def _validate(doc: _Document, name: str, source: str, registry: Any) -> Profile:
    data = doc.data
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise UsageError(
                f"{doc.where((key,), source)}: unknown key '{key}'"
                f"{did_you_mean(key, TOP_LEVEL_KEYS)}"
            )
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise UsageError(f"{doc.where(('description',), source)}: description: must be text")
    settings_raw = data.get("settings") or {}
    if not isinstance(settings_raw, dict):
        raise UsageError(f"{doc.where(('settings',), source)}: settings: must be a mapping")
    try:
        settings = build(Settings, settings_raw)
    except OptionError as exc:
        raise UsageError(
            f"{doc.where(('settings', exc.key), source)}: settings: "
            + exc.message.replace("option '", "setting '")
        ) from None
    if settings.sync_interval < 0:
        raise UsageError(f"{doc.where(('settings', 'sync_interval'), source)}: settings: "
                         f"sync_interval is {settings.sync_interval}, not 0 (off) or more")
    instances = {
        kind: _instances(doc, section, kind, source, registry)
        for section, kind in (("collectors", "collector"), ("triggers", "trigger"))
    }
    _check_unique_names(instances["collector"], instances["trigger"])
    return Profile(
        name=name,
        source=source,
        description=description,
        settings=settings,
        collectors=instances["collector"],
        triggers=instances["trigger"],
        document=data,
    )


def _instances(
    doc: _Document, section: str, kind: str, source: str, registry: Any
) -> List[InstanceSpec]:
    raw = doc.data.get(section) or {}
    if not isinstance(raw, dict):
        raise UsageError(f"{doc.where((section,), source)}: {section}: must be a mapping")
    out = []
    for inst_name, body in raw.items():
        path = (section, inst_name)
        here = doc.where(path, source)
        if not INSTANCE_NAME.match(inst_name):
            raise UsageError(
                f"{here}: {section}.{inst_name}: instance names are letters, digits, '_', '-', '.'"
            )
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise UsageError(f"{here}: {section}.{inst_name}: must be a mapping of options")
        type_name = body.get("type", inst_name)
        if not isinstance(type_name, str):
            raise UsageError(f"{doc.where(path + ('type',), here)}: {section}.{inst_name}.type: "
                             "must be a type name")
        timeout = body.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout) or timeout <= 0
        ):
            raise UsageError(
                f"{doc.where(path + ('timeout',), here)}: {section}.{inst_name}: "
                "timeout must be a finite number of seconds above 0"
            )
        options = {k: v for k, v in body.items() if k not in RESERVED_INSTANCE_KEYS}
        if registry is not None:
            try:
                plugin_type = registry.get(type_name, kind)
            except UsageError as exc:
                where_type = doc.where(path + ("type",), here)
                raise UsageError(f"{where_type}: {section}.{inst_name}: {exc}") from None
            try:
                build(getattr(plugin_type.cls, "Options", NoOptions), options)
            except OptionError as exc:
                raise UsageError(
                    f"{doc.where(path + (exc.key,), here)}: {section}.{inst_name}: {exc.message}"
                ) from None
        out.append(
            InstanceSpec(
                name=inst_name,
                kind=kind,
                type_name=type_name,
                timeout=float(timeout) if timeout is not None else None,
                options=options,
                where=here,
            )
        )
    return out


def _check_unique_names(collectors: List[InstanceSpec], triggers: List[InstanceSpec]) -> None:
    """An instance name is one work dir and one manifest entry: a collector and a trigger
    may not share it (the manifest would silently keep only one of them)."""
    collector_at = {c.name: c.where for c in collectors}
    for trigger in triggers:
        if trigger.name in collector_at:
            raise UsageError(
                f"{trigger.where}: triggers.{trigger.name}: the name '{trigger.name}' is also a "
                f"collector instance (collectors.{trigger.name} at {collector_at[trigger.name]}); "
                "instance names must be unique across collectors and triggers"
            )


def dump(profile: Profile) -> str:
    """The resolved profile as YAML (for ``scoutfs-collect profiles NAME``)."""
    doc = dict(profile.document)
    doc["settings"] = dataclasses.asdict(profile.settings)
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
