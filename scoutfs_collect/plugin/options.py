"""Declared plugin options: how a plugin type says what it accepts, and how values are checked.

A plugin type declares its options as a dataclass whose fields are made with
:func:`option`::

    @dataclasses.dataclass
    class Options:
        interface: str = option("any", "Interface to capture on (tcpdump -i).")
        file_count: int = option(2, "Number of files in the capture ring (tcpdump -W).")

The field's annotation is the option's type (``int``, ``float``, ``str``, ``bool``,
``List[str]`` or ``Optional[...]`` of those); the default and the one-line doc come
from :func:`option`. The same machinery validates the profile's ``settings``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from scoutfs_collect.core.errors import one_line


class OptionError(ValueError):
    """One bad option value or name; ``key`` is the option name it concerns."""

    def __init__(self, key: str, message: str) -> None:
        message = one_line(message)
        super().__init__(message)
        self.key = key
        self.message = message


def option(default: Any, doc: str, choices: Sequence[Any] = ()) -> Any:
    """Declare one option field: its default, a one-line doc and optional allowed values."""
    metadata = {"doc": doc, "choices": tuple(choices)}
    if isinstance(default, (list, dict)):
        factory_value = default
        return dataclasses.field(
            default_factory=lambda: type(factory_value)(factory_value), metadata=metadata
        )
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """What one option is, for validation and for ``scoutfs-collect plugins``."""

    name: str
    type_name: str
    default: Any
    doc: str
    choices: Tuple[Any, ...] = ()

    def as_dict(self) -> Dict[str, Any]:
        out = {"name": self.name, "type": self.type_name, "default": self.default, "doc": self.doc}
        if self.choices:
            out["choices"] = list(self.choices)
        return out


@dataclasses.dataclass
class NoOptions:
    """The options dataclass of a plugin type that takes none."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return "optional " + _type_name(args[0])
    if origin in (list, List):
        (inner,) = typing.get_args(tp) or (str,)
        return f"list of {_type_name(inner)}"
    return getattr(tp, "__name__", str(tp))


def specs(options_cls: type) -> List[OptionSpec]:
    """The declared options of an options dataclass, in declaration order."""
    hints = typing.get_type_hints(options_cls)
    out = []
    for f in dataclasses.fields(options_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        out.append(
            OptionSpec(
                name=f.name,
                type_name=_type_name(hints[f.name]),
                default=default,
                doc=f.metadata.get("doc", ""),
                choices=f.metadata.get("choices", ()),
            )
        )
    return out


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest candidate, or an empty string."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(name: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(name, args[0], value)
    if origin in (list, List):
        (inner,) = typing.get_args(tp) or (str,)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single value where a list is expected: a list of one
        if not isinstance(value, list):
            raise OptionError(name, f"option '{name}' must be a list, not {_kind(value)}")
        return [_coerce(name, inner, v) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise OptionError(name, f"option '{name}' must be true or false, not {_kind(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise OptionError(name, f"option '{name}' must be a whole number, not {_kind(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise OptionError(name, f"option '{name}' must be a finite number, not {value}")
            return float(value)
        raise OptionError(name, f"option '{name}' must be a number, not {_kind(value)}")
    if tp is str:
        if isinstance(value, str):
            if "\x00" in value:
                raise OptionError(name, f"option '{name}' must not contain a NUL character")
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise OptionError(name, f"option '{name}' must be a string, not {_kind(value)}")
    raise OptionError(name, f"option '{name}' has an unsupported declared type {tp!r}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def build(options_cls: type, values: Mapping[str, Any]) -> Any:
    """Check ``values`` against ``options_cls`` and return an instance of it.

    Raises :class:`OptionError` for the first unknown name or bad value; unknown
    names come with the nearest declared name as a suggestion.
    """
    hints = typing.get_type_hints(options_cls)
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    kwargs: Dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise OptionError(
                str(key), f"unknown option '{key}'{did_you_mean(str(key), list(fields))}"
            )
        coerced = _coerce(key, hints[key], value)
        choices = fields[key].metadata.get("choices", ())
        if choices and coerced not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise OptionError(key, f"option '{key}' must be one of {allowed}, not {coerced!r}")
        kwargs[key] = coerced
    return options_cls(**kwargs)


def check_declaration(options_cls: type) -> Optional[str]:
    """Why ``options_cls`` is not a usable options dataclass, or None when it is."""
    if not dataclasses.is_dataclass(options_cls):
        return "Options is not a dataclass"
    try:
        specs(options_cls)
    except Exception as exc:  # a broken annotation in a third-party plugin
        return f"Options cannot be read: {exc}"
    return None
