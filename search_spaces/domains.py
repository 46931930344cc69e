"""Every parameter a define-by-run space can suggest, with its domain, found by running the space on
a recording trial: the union of all branches (each method's conditional parameters, each teacher
count's set), for tools that need the whole space up front, such as TensorBoard's HParams view.

Every value a parameter can branch on (each choice of a categorical, each integer of a range of
at most MAX_INT_VALUES, else its ends; the ends of a float range) is taken once, in the branch
where that parameter was first met (a worklist of forced values), so the runs grow with the number
of values, not with their product. Conditions that nest (method -> teacher count -> teacher set)
are all reached; a parameter that only a combination of two unrelated choices unlocks would not
be, and no space here has one."""
from __future__ import annotations

from typing import Any, Callable

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

MAX_INT_VALUES = 64


class RecordingTrial:
    """Stands in for an optuna Trial: records each suggestion's distribution and answers with the
    forced value for that name, else the first choice (or the low end of a range)."""

    def __init__(self, forced: dict[str, Any]) -> None:
        self.forced = forced
        self.seen: dict[str, BaseDistribution] = {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        self.seen[name] = CategoricalDistribution(list(choices))
        return self.forced.get(name, choices[0])

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        self.seen[name] = IntDistribution(low, high, log=log, step=step)
        return self.forced.get(name, low)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        self.seen[name] = FloatDistribution(low, high, log=log, step=step)
        return self.forced.get(name, low)


def parameter_domains(space: Callable[[Any], Any]) -> dict[str, BaseDistribution]:
    """{parameter name: its distribution} over every branch of `space` (called with a trial)."""
    domains: dict[str, BaseDistribution] = {}
    taken: set[tuple[str, str]] = set()
    todo: list[dict[str, Any]] = [{}]
    while todo:
        forced = todo.pop()
        trial = RecordingTrial(forced)
        space(trial)
        for name, dist in trial.seen.items():
            domains.setdefault(name, dist)
            for value in _branch_values(dist):
                key = (name, repr(value))
                if key not in taken:
                    taken.add(key)
                    todo.append({**forced, name: value})
    return domains


def _branch_values(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and (dist.high - dist.low) // dist.step < MAX_INT_VALUES:
        return list(range(dist.low, dist.high + 1, dist.step))
    return [dist.low, dist.high]
