"""Name -> factory registries for models, datasets and training methods (docs/design.md#registries)."""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Generic, TypeVar

from trainers.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])


class UnknownNameError(UserError):
    """An unknown registry name; the message lists close matches."""


class Registry(Generic[F]):
    """A plain dict of named factories with a decorator to fill it.

    Duplicates raise instead of silently overwriting; an unknown name raises with close matches.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, F] = {}

    def register(self, fn: F | None = None, *, name: str | None = None) -> Any:
        def add(f: F) -> F:
            key = name or f.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = f
            return f

        return add(fn) if fn is not None else add

    def get(self, name: str) -> F:
        if name not in self._entries:
            raise UnknownNameError(unknown_name_message(self.kind, name, self._entries))
        return self._entries[name]

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the factory, dropping None kwargs so the factory's defaults win (timm convention)."""
        return self.get(name)(**{k: v for k, v in kwargs.items() if v is not None})

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def unknown_name_message(kind: str, name: str, known: Any) -> str:
    """'unknown model 'resnet-18'; did you mean 'resnet18'?' or the list of known names."""
    close = difflib.get_close_matches(str(name), list(known), n=3, cutoff=0.6)
    if close:
        hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    else:
        hint = "known: " + ", ".join(sorted(known))
    return f"unknown {kind} {name!r}; {hint}"
