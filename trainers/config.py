"""Typed configs: frozen pydantic models, unknown keys refused, parsed once at the edge
(`from_dict`, `load_yaml`), with one-line errors that name the dotted field, e.g.
`model.kwargs.widht: unknown field; did you mean 'width'?` (docs/design.md#configs).

The training config built on it is trainers/train_config.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from trainers.errors import UserError
from trainers.registry import unknown_name_message

T = TypeVar("T", bound="Config")


class ConfigError(UserError):
    """Invalid configuration; `str(err)` is a one-line message starting with the dotted field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.detail = message
        super().__init__(f"{field}: {message}" if field else message)

    def __reduce__(self) -> tuple[Any, ...]:  # pickled across Ray processes with both arguments
        return type(self), (self.field, self.detail)

    def under(self, prefix: str) -> "ConfigError":
        if not prefix:
            return self
        field = f"{prefix}.{self.field}" if self.field and not self.field.startswith("[") else (
            f"{prefix}{self.field}")
        return ConfigError(field, self.detail)


def check(condition: bool, field: str, message: str) -> None:
    """Raise ConfigError(field, message) unless condition holds (for `Config.check`)."""
    if not condition:
        raise ConfigError(field, message)


# ----------------------------------------------------------------------------- paths

def absolute_path(value: str) -> str:
    """A local path made absolute against this process's working directory; URIs (s3://, gs://,
    file://) unchanged. Configs do this when they are built, on the driver: the Ray processes
    they are handed to run in other working directories, where a relative path means another
    place."""
    return value if "://" in value else os.path.abspath(os.path.expanduser(value))


def absolute_if_path(ref: str) -> str:
    """For fields that take a registry name or a path: a path (it has a '/' or exists here) made
    absolute, a name unchanged."""
    return absolute_path(ref) if "/" in ref or os.path.exists(ref) else ref


def resolved(resolve: Callable[[str], str]) -> AfterValidator:
    """A field validator from a path function; its ConfigError reads as the field's own error."""
    def validate(value: str) -> str:
        try:
            return resolve(value)
        except ConfigError as err:
            raise ConfigError("", err.detail) from None
    return AfterValidator(validate)


LocalPath = Annotated[str, resolved(absolute_path)]
NameOrPath = Annotated[str, resolved(absolute_if_path)]

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def identifier(value: str, field: str = "") -> str:
    """A name that becomes a file or folder name under the storage (sweeps, runs, teachers,
    evaluations): letters, digits, '-', '_' and '.', not starting with '.', at most 100
    characters, so it can never be '', '.', '..' or hold a '/'."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ConfigError(field, f"a name of letters, digits, '-', '_' and '.' (not first; at most 100), "
                                 f"got {value!r}")
    return value


Identifier = Annotated[str, resolved(identifier)]


# ----------------------------------------------------------------------------- the base model

class Config(BaseModel):
    """Frozen, unknown keys refused, strict types (an int is accepted for a float; a YAML list
    for a tuple). Subclasses put range checks in `check`, raising ConfigError(field, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, validate_default=True,
                              use_attribute_docstrings=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise config_error(err, type(self)) from None

    @model_validator(mode="before")
    @classmethod
    def _lists_to_tuples(cls, data: Any) -> Any:
        data = cls.expand(data)
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, info in cls.model_fields.items():
            arity = _tuple_arity(info.annotation)
            if name in out and isinstance(out[name], list) and arity is not None:
                if arity >= 0 and len(out[name]) != arity:
                    raise ConfigError(name, f"expected {arity} values, got {len(out[name])}")
                out[name] = tuple(out[name])
        return out

    @model_validator(mode="after")
    def _check(self) -> "Config":
        self.check()
        return self

    def check(self) -> None:
        """Range checks across fields; raise ConfigError(field, message)."""

    @classmethod
    def expand(cls, value: Any) -> Any:
        """Shorthands a config accepts in place of a mapping (e.g. an attack's preset name)."""
        return value

    def replace(self: T, **changes: Any) -> T:
        """A validated copy with some fields changed."""
        return type(self).model_validate({**self.model_dump(), **changes})


def _tuple_arity(annotation: Any) -> int | None:
    """-1 for tuple[X, ...], n for a fixed tuple of n, None if the field is no tuple."""
    for tp in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(tp) is tuple:
            args = typing.get_args(tp)
            return -1 if len(args) == 2 and args[1] is Ellipsis else len(args)
    return None


# ----------------------------------------------------------------------------- the edge

def from_dict(cls: type[T], data: Any) -> T:
    """Build config `cls` from plain data (a mapping, e.g. YAML); errors as ConfigError."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"expected a mapping, got {_describe(data)}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise config_error(err, cls) from None


def to_dict(obj: Any) -> Any:
    """Plain JSON/YAML-ready data (tuples become lists)."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
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
    """Stable short hash of a config (model or plain data)."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML becomes a one-line ConfigError."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError("", f"config file {str(p)!r} is a folder; expected a YAML file")
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


# ----------------------------------------------------------------------------- pydantic errors -> one line

EXPECTED = {"int_type": "int", "float_type": "float", "bool_type": "bool", "string_type": "str"}
MAPPING = {"model_type", "model_attributes_type", "dict_type"}


def config_error(err: ValidationError, root: type) -> ConfigError:
    """The first error of a ValidationError as a ConfigError naming the dotted field."""
    e = err.errors(include_url=False)[0]
    path, model = _walk(root, e["loc"])
    kind, value, ctx = e["type"], e.get("input"), e.get("ctx") or {}
    if kind == "value_error" and isinstance(ctx.get("error"), ConfigError):
        inner = ctx["error"]
        return ConfigError(_join(path, inner.field), inner.detail)
    if kind == "extra_forbidden":
        key = path.rsplit(".", 1)[-1]
        moved = getattr(model, "renamed", {}).get(key)
        if moved:
            return ConfigError(path, f"unknown field; it is now {moved!r}")
        msg = unknown_name_message("field", key, model.model_fields if model else {})
        return ConfigError(path, "unknown field; " + msg.split("; ", 1)[1])
    if kind in EXPECTED:
        return ConfigError(path, f"expected {EXPECTED[kind]}, got {_describe(value)}")
    if kind in MAPPING:
        return ConfigError(path, f"expected a mapping, got {_describe(value)}")
    if kind in ("tuple_type", "list_type"):
        return ConfigError(path, f"expected a list, got {_describe(value)}")
    if kind == "literal_error":
        return ConfigError(path, f"{value!r} not allowed; expected one of " + ctx["expected"].replace(" or ", ", "))
    if kind == "missing":
        return ConfigError(path, "required field is missing")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        known = [t.strip(" '") for t in ctx.get("expected_tags", "").split(",") if t.strip()]
        if kind == "union_tag_not_found":
            return ConfigError(_join(path, "name"), "required field is missing (e.g. natural, pgd_at, trades, darht)")
        return ConfigError(_join(path, "name"), unknown_name_message("method", ctx["tag"], known))
    return ConfigError(path, e["msg"])


def _walk(root: type, loc: tuple[Any, ...]) -> tuple[str, type | None]:
    """The dotted path of an error location (union tags dropped) and the model holding its last
    part (for close matches of an unknown key)."""
    path, tp, model = "", root, None
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            model = tp
            info = tp.model_fields.get(str(part))
            path = _join(path, str(part))
            tp = info.annotation if info else Any
        elif typing.get_origin(tp) in (tuple, list) and isinstance(part, int):
            args = typing.get_args(tp)
            path += f"[{part}]"
            tp = args[0] if len(args) == 2 and args[1] is Ellipsis or len(args) == 1 else (
                args[part] if part < len(args) else Any)
        elif typing.get_origin(tp) is dict:
            path = _join(path, str(part))
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        elif _is_union(tp):
            tp = next((m for m in typing.get_args(tp) if part in _tags(m)), Any)  # a discriminator tag
        else:
            path = _join(path, str(part))
    return path, model


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if _is_union(tp) and len(args) == 1:
        return _unwrap(args[0])
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _tags(member: Any) -> tuple[Any, ...]:
    info = getattr(member, "model_fields", {}).get("name")
    return typing.get_args(info.annotation) if info is not None else ()


def _join(path: str, name: str) -> str:
    if not name:
        return path
    if not path or name.startswith("["):
        return f"{path}{name}"
    return f"{path}.{name}"


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list, tuple)) else (
        type(value).__name__)
