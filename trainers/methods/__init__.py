"""Training methods by name (natural, pgd_at, trades, fat, fat_trades, darht, b_mtard, mtard, rslad,
ard). A new method is one file here (its config, its loss, its `MethodDef`) plus its name in the
import below, and its test."""
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from trainers.config import config_error

from trainers.methods import ard, darht, fat, mtard, natural, pgd_at, rslad, trades  # noqa: F401  (registration)
from trainers.methods.attack import AttackConfig, craft
from trainers.methods.base import METHODS, Method, MethodConfig as MethodConfigBase, MethodContext, MethodDef, StepInfo

MethodConfig = Annotated[Union[tuple(dict.fromkeys(METHODS.get(n).config for n in METHODS.names()))],
                         Field(discriminator="name")]
"""Any registered method's config, picked by its `name`."""
_METHOD_CONFIG = TypeAdapter(MethodConfig)


def method_config(raw: Any) -> MethodConfigBase:
    """A method's config from plain data, e.g. {name: darht, profile: official, mc_samples: 4}."""
    try:
        return _METHOD_CONFIG.validate_python(raw)
    except ValidationError as err:
        raise config_error(err, MethodConfig) from None

__all__ = ["METHODS", "AttackConfig", "Method", "MethodConfig", "MethodConfigBase", "MethodContext", "MethodDef",
           "StepInfo", "craft", "method_config"]
