"""Typed dataclass configs loaded from plain dicts / YAML with errors that name the dotted field.

`from_dict(Cls, data)` rejects unknown keys (suggesting close matches), checks every value against
the field's annotation (int, float, bool, str, Literal, Optional, list, tuple, dict, nested
dataclasses) and prefixes errors raised in `__post_init__` with the field path, e.g.
`distill.teachers[1].arch: 'resnet-18' unknown; did you mean 'resnet18'?`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from trainers.registry import unknown_name_message

T = TypeVar("T")


class ConfigError(ValueError):
    """Invalid configuration; `str(err)` is a one-line message starting with the dotted field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.detail = message
        super().__init__(f"{field}: {message}" if field else message)

    def under(self, prefix: str) -> "ConfigError":
        if not prefix:
            return self
        field = f"{prefix}.{self.field}" if self.field and not self.field.startswith("[") else (
            f"{prefix}{self.field}")
        return ConfigError(field, self.detail)


def check(condition: bool, field: str, message: str) -> None:
    """Raise ConfigError(field, message) unless condition holds (for `__post_init__`)."""
    if not condition:
        raise ConfigError(field, message)


def absolute_path(value: str) -> str:
    """A local path made absolute against this process's working directory; URIs (s3://, gs://,
    file://) unchanged. Configs call this when they are built, on the driver: the Ray processes
    they are handed to run in other working directories, where a relative path means another
    place."""
    return value if "://" in value else os.path.abspath(os.path.expanduser(value))


def absolute_if_path(ref: str) -> str:
    """For fields that take a registry name or a path: a path (it has a '/' or exists here) made
    absolute, a name unchanged."""
    return absolute_path(ref) if "/" in ref or os.path.exists(ref) else ref


def resolve_fields(obj: Any, **resolvers: Any) -> None:
    """In a frozen dataclass's `__post_init__`: replace each named field by resolver(value)
    (tuples element-wise, None left alone)."""
    for name, resolve in resolvers.items():
        value = getattr(obj, name)
        if isinstance(value, tuple):
            object.__setattr__(obj, name, tuple(resolve(v) for v in value))
        elif value is not None:
            object.__setattr__(obj, name, resolve(value))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML becomes a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("", f"{p}: not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{p}: not valid YAML (not UTF-8 text)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass `cls` from `data` (a mapping), validating as described in the module doc."""
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(_join(path, str(key)), _unknown_field(key, fields))
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(_join(path, name), "required field is missing")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise err.under(path) from None


def to_dict(obj: Any) -> Any:
    """Plain JSON/YAML-ready data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def merge_dicts(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge: mappings merge key by key, anything else in `top` replaces."""
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge_dicts(out[key], value) if both else value
    return out


def config_hash(obj: Any, length: int = 16) -> str:
    """Stable short hash of a config (dataclass or plain data)."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _unknown_field(key: Any, fields: dict[str, Any]) -> str:
    msg = unknown_name_message("field", key, fields)  # "unknown field 'x'; did you mean ...?"
    return "unknown field; " + msg.split("; ", 1)[1]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else (
        type(value).__name__)


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, path)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if len(errors) == 1 else ConfigError(path, f"got {_describe(value)}, expected "
                                                             + " or ".join(_name(o) for o in options))
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise ConfigError(path, f"{value!r} not allowed; expected one of "
                          + ", ".join(repr(a) for a in args))
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {_describe(value)}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(path, f"expected {len(args)} values, got {len(value)}")
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {_describe(value)}")
        vt = args[1] if args else Any
        return {str(k): _convert(vt, v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config annotation {tp!r} at {path}")
    raise ConfigError(path, f"expected {_name(tp)}, got {_describe(value)}")


def _name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))
