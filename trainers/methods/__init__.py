"""Training methods by name (natural, pgd_at, trades, fat, fat_trades, darht, b_mtard, mtard, rslad, ard)."""
from trainers.methods import ard, darht, fat, mtard, natural, pgd_at, rslad, trades  # noqa: F401  (registration)
from trainers.methods.base import METHODS, Method, MethodContext, MethodDef, StepInfo, parse_method

__all__ = ["METHODS", "Method", "MethodContext", "MethodDef", "StepInfo", "parse_method"]
