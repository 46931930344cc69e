"""Which searched parameters the objective depends on: Optuna's fANOVA parameter importances
(seeded, so a report rebuilt from the same study shows the same numbers) over the sweep's stored
study (orchestrator/study.py), for the report.

fANOVA only ranks parameters every trial of the study has, so the importances are computed over
all trials (method, shared training parameters) and then over each method's trials (its
conditional parameters). A trial's teacher choices (the count and set of DARHT's `teachers/*`,
the teacher roles of B-MTARD or RSLAD) enter as one parameter, `teachers`: the teacher set the
trial ran with, so compositions compare across counts. A categorical parameter's share is
approximate (fANOVA integrates over the cube of its one-hot columns); the ranking is what to read."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.distributions import CategoricalDistribution  # noqa: E402
from optuna.importance import FanovaImportanceEvaluator, get_param_importances  # noqa: E402
from optuna.search_space import intersection_search_space  # noqa: E402
from optuna.trial import FrozenTrial, TrialState, create_trial  # noqa: E402

from orchestrator.study import quiet_optuna  # noqa: E402
from trainers.methods import METHODS  # noqa: E402

SEED = 0
MIN_TRIALS = 20
TRIALS_PER_PARAM = 5
FIGURE = "importance.png"


@dataclass
class Group:
    """The importances of one set of trials: {objective: {parameter: importance}}."""

    name: str
    trials: int
    params: int
    importances: dict[str, dict[str, float]]

    @property
    def needed(self) -> int:
        """Trials below which the importances are noise: TRIALS_PER_PARAM per parameter, and at
        least MIN_TRIALS (a rule of thumb for a 64-tree random forest, not a test)."""
        return max(MIN_TRIALS, TRIALS_PER_PARAM * self.params)


def teacher_param(name: str) -> bool:
    """`teachers/count`, `teachers/2`, `teachers/composition`, `b_mtard/robust_teacher`, ..."""
    head, _, rest = name.partition("/")
    return head == "teachers" or (head in METHODS and rest in METHODS.get(head).teacher_roles)


def importance_groups(study: optuna.Study) -> list[Group]:
    """All completed trials, then each method's (when the study searched over methods)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values and all(math.isfinite(v) for v in t.values)]
    objectives = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    groups = [_group("all trials", done, study, objectives)]
    methods = sorted({t.params["method"] for t in done if "method" in t.params})
    if len(methods) > 1:
        groups += [_group(m, [t for t in done if t.params.get("method") == m], study, objectives) for m in methods]
    return groups


def _group(name: str, trials: list[FrozenTrial], study: optuna.Study, objectives: list[str]) -> Group:
    with quiet_optuna():
        merged = optuna.create_study(directions=study.directions)
        sets = sorted({t.user_attrs["teachers"] for t in trials if "teachers" in t.user_attrs})
        for t in trials:
            params = {k: v for k, v in t.params.items() if not teacher_param(k)}
            dists = {k: t.distributions[k] for k in params}
            if "teachers" in t.user_attrs:
                params["teachers"], dists["teachers"] = t.user_attrs["teachers"], CategoricalDistribution(sets)
            merged.add_trial(create_trial(params=params, distributions=dists, values=t.values))
        kept = merged.get_trials(deepcopy=False)
        # Only what varied in these trials can explain the objective (a method's trials share `method`).
        searched = [n for n in intersection_search_space(kept) if len({t.params[n] for t in kept}) > 1]
        varied = all(len({t.values[i] for t in kept}) > 1 for i in range(len(objectives)))
        importances = {} if not (searched and varied) else {
            objective: get_param_importances(merged, evaluator=FanovaImportanceEvaluator(seed=SEED), params=searched,
                                             target=lambda t, i=i: t.values[i])
            for i, objective in enumerate(objectives)}
    return Group(name, len(trials), len(searched), importances)


def importance_markdown(groups: list[Group], journal_uri: str) -> list[str]:
    lines = ["", "## Parameter importances (validation split)", "",
             "What the search objective depends on: fANOVA importances (`optuna.importance`, "
             f"`FanovaImportanceEvaluator(seed={SEED})`), each parameter's share of the objective's variance "
             "(approximate for categorical parameters), summing to 1; over all trials for the parameters every "
             "trial has, then over each method's trials for its own. `teachers` is the teacher set a trial ran "
             "with (its teacher count and choices).", "",
             f"The study: `optuna-dashboard {journal_uri}` (after `pip install optuna-dashboard`).", ""]
    for g in groups:
        lines += [f"### {g.name}: {g.trials} completed trial(s), {g.params} searched parameter(s)", ""]
        if not g.importances:
            lines += ["Not computed: no parameter, or not the objective, took two values in these trials.", ""]
            continue
        if g.trials < g.needed:
            lines += [f"Too few trials to trust: {g.trials} completed, {g.needed} needed for {g.params} parameter(s) "
                      f"({TRIALS_PER_PARAM} per parameter, at least {MIN_TRIALS}).", ""]
        objectives = list(g.importances)
        lines += ["| parameter | " + " | ".join(objectives) + " |", "|---|" + "---|" * len(objectives)]
        for param in g.importances[objectives[0]]:
            lines.append(f"| {param} | " + " | ".join(f"{g.importances[o][param]:.3f}" for o in objectives) + " |")
        lines.append("")
    return lines + ([f"![parameter importances]({FIGURE})", ""] if any(g.importances for g in groups) else [])


def importance_png(groups: list[Group]) -> bytes:
    """One panel per group: a bar per parameter (per objective), the most important on top."""
    shown = [g for g in groups if g.importances]
    rows = [max(1, len(next(iter(g.importances.values())))) for g in shown]
    fig, axes = plt.subplots(len(shown), 1, figsize=(7, 1.0 + 0.3 * sum(rows) + 0.5 * len(shown)), squeeze=False,
                             sharex=True, layout="constrained", gridspec_kw={"height_ratios": rows})
    for ax, g in zip(axes[:, 0], shown):
        objectives = list(g.importances)
        params = list(reversed(g.importances[objectives[0]]))
        height = 0.8 / len(objectives)
        for j, objective in enumerate(objectives):
            ax.barh([i + j * height for i in range(len(params))], [g.importances[objective][p] for p in params],
                    height, label=objective)
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(params))], params, fontsize=8)
        trust = "" if g.trials >= g.needed else f", too few to trust (< {g.needed})"
        ax.set_title(f"{g.name}: {g.trials} trials{trust}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.grid(axis="x", alpha=0.3)
        if len(objectives) > 1:
            ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("fANOVA importance (share of the objective's variance)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
