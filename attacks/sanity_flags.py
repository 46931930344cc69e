"""The result type of every sanity check (attacks.sanity, attacks.sanity_gradients,
attacks.sanity_suite): a `Flag` {check, status (ok | warn | fail | skip), reason (one line),
figures}, and a checkpoint's verdict, the worst status of its flags."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warn", "fail", "skip"]
SEVERITY = {"skip": 0, "ok": 1, "warn": 2, "fail": 3}


@dataclass(frozen=True)
class Flag:
    check: str
    status: Status
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(flags: list[Flag]) -> Status:
    """The worst status of the flags ("ok" when every check was skipped)."""
    return max((f.status for f in flags if f.status != "skip"), key=SEVERITY.__getitem__, default="ok")


def share(k: int, n: int) -> str:
    return f"{k} point{'s' if k != 1 else ''} ({k / max(n, 1):.1%})"
