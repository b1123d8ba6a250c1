"""Config validation with pydantic: plain dicts (YAML, environment, flags) into the frozen config dataclasses.

pydantic validates the stdlib dataclasses themselves (no copy of the schema): it coerces each value to its
field's type and runs the dataclass's `__post_init__` checks. Before it, one walk over the fields does what
pydantic cannot read from a stdlib dataclass: byte-size fields (metadata ``bytes=True``) take "64MB" / "2GiB"
(memory/schema.py's parse_bytes), tuple fields take "a,b" strings (the flags' form), booleans are refused for
numbers, and an unknown key names the nearest known one. Every failure is one ConfigError naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from longwatch.memory.schema import ConfigError, parse_bytes

T = TypeVar("T")

_PYDANTIC = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
"""Unknown keys fail (the walk reports them first); a YAML number is a string where a string is wanted
(`frame_size: 448`); nested stdlib dataclasses inherit this config."""


def config_keys(cls: type) -> list[str]:
    """Every dotted key of config dataclass `cls`, sections included: ["memory", "memory.policy", ...]."""
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        keys.append(f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += [f"{f.name}.{k}" for k in config_keys(hints[f.name])]
    return keys


def unknown_key(dotted: str, known: list[str], where: str = "") -> ConfigError:
    """The error for an unknown dotted key, with the nearest known key (by its last part, any section) if close."""
    parent, _, leaf = dotted.rpartition(".")
    by_leaf: dict[str, list[str]] = {}
    for k in known:
        if k.count(".") == dotted.count("."):  # a key is matched against keys, a section against sections
            by_leaf.setdefault(k.rpartition(".")[2], []).append(k)
    near = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
    if near:
        keys = by_leaf[near[0]]
        hint = f"; did you mean '{next((k for k in keys if k.rpartition('.')[0] == parent), keys[0])}'?"
    else:
        hint = f" (known: {', '.join(sorted(k.rpartition('.')[2] for k in known if k.rpartition('.')[0] == parent))})"
    return ConfigError(f"unknown config key '{dotted}'{hint}{where}")


def _from(sources: Mapping[str, str] | None, dotted: str) -> str:
    """' (from FILE)' for a value that came from a file or the environment, so the user knows where to fix it."""
    key = dotted.split("[")[0]  # ui.allowed_schemes[1] came with ui.allowed_schemes
    label = (sources or {}).get(key) or (sources or {}).get(key.split(".")[0], "")
    return f" (from {label})" if label and label not in ("default", "override") else ""


def _types(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)


def _prepare(cls: type, data: Any, path: str, known: list[str], sources: Mapping[str, str] | None) -> Any:
    """`data` checked key by key against `cls` and given the forms pydantic cannot read from a stdlib dataclass."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: must be a mapping of keys, got {data!r}{_from(sources, path)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise unknown_key(dotted, known, _from(sources, dotted))
        tp = hints[key]
        if fields[key].metadata.get("bytes"):
            try:
                value = parse_bytes(value)
            except ValueError as e:
                raise ConfigError(f"{dotted}: {e}{_from(sources, dotted)}") from None
        elif dataclasses.is_dataclass(tp):
            value = _prepare(tp, value, dotted, known, sources)
        elif isinstance(value, bool) and bool not in _types(tp) and {int, float} & set(_types(tp)):
            raise ConfigError(f"{dotted}: expected a number, got {value!r}{_from(sources, dotted)}")
        elif isinstance(value, str) and any(typing.get_origin(t) is tuple for t in _types(tp)):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        out[key] = value
    return out


@functools.cache
def _model(cls: type) -> type[BaseModel]:
    """A one-field pydantic model around `cls`, so that `_PYDANTIC` applies to it and its sections."""
    return create_model(f"{cls.__name__}Input", __config__=_PYDANTIC, root=(cls, ...))


def _message(err: Mapping[str, Any], prefix: str, sources: Mapping[str, str] | None) -> str:
    """One pydantic error as 'dotted.key: what is wrong, got VALUE'."""
    path = prefix
    for part in err["loc"][1:]:  # loc[0] is the wrapper's `root`
        path = f"{path}[{part}]" if isinstance(part, int) else (f"{path}.{part}" if path else str(part))
    error = (err.get("ctx") or {}).get("error")
    if err["type"] == "value_error" and isinstance(error, ValueError):
        # a dataclass's __post_init__ says "field: message"; the location is its section
        msg = str(error)
        field, sep, rest = msg.partition(": ")
        if sep and field.isidentifier():
            path, msg = (f"{path}.{field}" if path else field), rest
        return f"{path}: {msg}{_from(sources, path)}" if path else msg
    msg = err["msg"][0].lower() + err["msg"][1:]
    return f"{path or 'config'}: {msg}, got {err['input']!r}{_from(sources, path)}"


def validate(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "",
             sources: Mapping[str, str] | None = None) -> T:
    """Config dataclass `cls` from plain `data` (sections as nested mappings), validated by pydantic.

    Raises ConfigError naming the dotted key (`prefix` goes before it): an unknown key (with the nearest one),
    a value of the wrong type, a section that is not a mapping, or a value the dataclass's __post_init__ refuses.
    `sources` ({dotted key: where it came from}) lets the message say which file or variable to fix.
    """
    known = [f"{prefix}.{k}" if prefix else k for k in config_keys(cls)]
    prepared = _prepare(cls, dict(data or {}), prefix, known, sources)
    try:
        return _model(cls).model_validate({"root": prepared}).root  # type: ignore[attr-defined]
    except ValidationError as e:
        raise ConfigError(_message(e.errors()[0], prefix, sources)) from None


def replace(obj: T, changes: Mapping[str, Any], prefix: str = "") -> T:
    """`dataclasses.replace(obj, **changes)` with the changes validated like a config file's values."""
    current = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}  # type: ignore[arg-type]
    return validate(type(obj), {**current, **changes}, prefix)
