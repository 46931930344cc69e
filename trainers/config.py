"""Typed configs: frozen pydantic models, unknown keys refused, parsed once at the edge
(`from_dict`, `load_yaml`), with one-line errors that name the dotted field, e.g.
`model.kwargs.widht: unknown field; did you mean 'width'?` (docs/design.md#configs).

The training config lives here too: one model per component, `TrainConfig` on top, its `method`
a union of the registered methods' configs told apart by `name` (trainers/methods). The same
config drives teacher pretraining and distillation.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from trainers.data import DATASETS, Dataset, load_dataset
from trainers.models import MODELS
from trainers.registry import unknown_name_message

T = TypeVar("T", bound="Config")


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


# ----------------------------------------------------------------------------- the training config

class DataConfig(Config):
    name: str = "digits"
    """Registered dataset: digits (embedded), synthetic, cifar10, cifar100, tinyimagenet."""
    root: LocalPath | None = None
    """Folder holding the dataset's standard on-disk layout (not needed for digits/synthetic)."""
    val_size: int | None = None
    """Validation examples held out from train for model selection (None: dataset default)."""
    split_seed: int | None = None
    """Seed of the validation carve, kept separate from the training seed (None: the dataset's
    default, 0)."""
    options: dict[str, Any] = {}
    """Extra dataset arguments (e.g. synthetic sizes)."""
    batch_size: int = 128
    eval_batch_size: int = 512
    augment: bool = True
    """Random crop + flip as the dataset defines them (crop padding, flip on/off)."""

    def dataset_kwargs(self) -> dict[str, Any]:
        """The arguments of `load_dataset` that this config selects (None: the dataset's default)."""
        return {"name": self.name, "root": self.root, "val_size": self.val_size, "split_seed": self.split_seed,
                **self.options}

    def load(self) -> Dataset:
        return load_dataset(**self.dataset_kwargs())

    def check(self) -> None:
        check(self.name in DATASETS, "name", unknown_name_message("dataset", self.name, DATASETS.names()))
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.eval_batch_size >= 1, "eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")


class ModelConfig(Config):
    arch: str = "small_cnn"
    """Registered architecture (trainers.models.MODELS)."""
    kwargs: dict[str, Any] = {}
    """Architecture arguments, checked against the architecture's signature, e.g. {depth: 4}."""

    def check(self) -> None:
        check(self.arch in MODELS, "arch", unknown_name_message("architecture", self.arch, MODELS.names()))
        schema = _kwargs_schema(self.arch)
        try:
            schema.model_validate(self.kwargs)
        except ValidationError as err:
            raise config_error(err, schema).under("kwargs") from None


_SCHEMAS: dict[str, type[BaseModel]] = {}


def _kwargs_schema(arch: str) -> type[BaseModel]:
    """A model of an architecture's keyword arguments, from its factory's signature."""
    if arch not in _SCHEMAS:
        factory = MODELS.get(arch)
        hints = typing.get_type_hints(factory)
        fields = {name: (hints[name], p.default) for name, p in inspect.signature(factory).parameters.items()
                  if name not in ("num_classes", "data_cfg") and p.default is not p.empty}
        _SCHEMAS[arch] = create_model(f"{arch}_kwargs", __config__=ConfigDict(extra="forbid", strict=True), **fields)
    return _SCHEMAS[arch]


class OptimConfig(Config):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (None: off)."""

    def check(self) -> None:
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", f"must be > 0, got {self.grad_clip}")


class ScheduleConfig(Config):
    kind: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: tuple[int, ...] = ()
    """multistep: epochs at which the lr is multiplied by gamma."""
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    """Linear warm-up from 0 to the base lr over this many epochs."""
    per_step: bool = True
    """Update the lr every step (fractional epochs) rather than once per epoch."""

    def check(self) -> None:
        check(list(self.milestones) == sorted(self.milestones), "milestones", "must be increasing")
        check(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")


class ValidationConfig(Config):
    """Per-epoch validation (cheap settings) used to select the 'best' checkpoint."""

    pgd_steps: int = 10
    """PGD steps (step eps/4, start x + 0.001 N(0, 1)) for validation robust accuracy."""
    max_examples: int | None = None
    """Validate on at most this many validation examples (None: all)."""
    select: Literal["w_robust", "pgd", "clean"] = "w_robust"
    """Criterion for the 'best' checkpoint (on the validation split, never the test split)."""
    test_at_end: bool = True
    """Evaluate the best and last checkpoints on the test split (clean + PGD) at the end."""


class TrainConfig(Config):
    name: str = "run"
    seed: int = 0
    epochs: int = 10
    eps: float | None = None
    """Threat-model L-inf radius on [0, 1] pixels (None: the dataset's default, 8/255 on CIFAR)."""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    method: "MethodConfig" = Field(default_factory=lambda: {"name": "natural"})
    """The training method, picked by `name`, with its `profile` and parameters (trainers.methods)."""
    teachers: tuple[NameOrPath, ...] = ()
    """Teacher checkpoint directories, in order (distillation methods); orchestrator.distill also
    takes registry names. Relative paths are made absolute when the config is built."""
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    validation: ValidationConfig = ValidationConfig()
    output_dir: str = "runs/run"
    """Where `last/` and `best/` checkpoints are written."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on GPU, fp32 on CPU."""
    channels_last: bool | None = None
    """None: on for every model on a GPU."""
    compile: bool = False
    threads: int | None = None
    """torch CPU threads (Ray workers must set this explicitly: torch may not follow OMP_NUM_THREADS)."""

    def check(self) -> None:
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.eps is None or 0 < self.eps <= 1, "eps",
              f"must be in (0, 1] (images are in [0, 1]; 8/255 = {8 / 255:.6f}), got {self.eps}")


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML training config; `overrides` (nested dict) win over the file."""
    return from_dict(TrainConfig, merge_dicts(load_yaml(path), overrides or {}))


# The method union is made of the registered methods' configs, whose module imports this one
# (for `Config`): it is resolved once trainers.methods has registered them all.
from trainers.methods import MethodConfig  # noqa: E402

TrainConfig.model_rebuild()
