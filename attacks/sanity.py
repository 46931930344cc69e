"""Sanity checks of a robustness evaluation: the documented ways an attack fails to find the
adversarial examples that exist (Carlini et al., "On Evaluating Adversarial Robustness",
https://arxiv.org/abs/1902.06705; Pintor et al., "Indicators of Attack Failure",
https://arxiv.org/abs/2106.09947; the official AutoAttack's own checks). Each check returns a
`Flag` (attacks.sanity_flags).

Model checks attack a seeded subsample again: the robustness curve (must not rise with eps), PGD
at eps 1 (must reach ~0 %), PGD-100 with restarts against the suite's short PGD, the input
gradients (a path, none zero or non-finite, and predicting the loss: attacks.sanity_gradients),
two identical forward passes (a randomized model needs EOT), probabilities instead of logits, and
transfer from each teacher. Suite checks read the per-point masks the suite stored
(`attacks.sanity_suite`); the points only Square breaks are first re-attacked with stronger
white-box attacks (`confirm_correct`). Never imports Ray.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attacks.scoring import check_perturbation, clean_correct, predict, robust_correct
from attacks.pgd import require_eval_mode
from attacks.registry import AttackSpec, run_attack
from attacks.sanity_flags import Flag, share
from attacks.sanity_gradients import gradient_flag, quality_flag

POINT_SHARE = 0.01
"""Slack of per-point comparisons between two attacks (their seeds and step sizes differ)."""
UNBOUNDED_MAX = 0.01
"""Robust accuracy PGD may leave at eps 1, where every image is reachable."""
STEPS_DROP = 0.05
"""PGD-100 with restarts lowering robust accuracy by more than this: the short PGD is too weak."""
RANDOM_TOL = 1e-5
"""Largest relative change of the logits between two identical forward passes of a deterministic model."""


@dataclass(frozen=True)
class SanityParams:
    """What the model checks run; part of the stored rows' key."""

    points: int = 200
    """Size of the seeded subsample of the evaluated split."""
    factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    """Robustness curve: eps multiples (eps is the evaluation's)."""
    curve_steps: int = 20
    unbounded_eps: float = 1.0
    unbounded_steps: int = 50
    strong_steps: int = 100
    strong_restarts: int = 2
    transfer_steps: int = 20
    confirm_points: int = 100
    """Most Square-only points re-attacked per checkpoint (a seeded sample; the survivors are scaled up)."""
    confirm_steps: int = 200
    confirm_restarts: int = 10

    def __post_init__(self) -> None:
        for name in ("points", "curve_steps", "unbounded_steps", "strong_steps", "strong_restarts", "transfer_steps",
                     "confirm_points", "confirm_steps", "confirm_restarts"):
            if getattr(self, name) < 1:
                raise ValueError(f"sanity {name} must be >= 1, got {getattr(self, name)}")
        if not self.factors or any(f <= 0 for f in self.factors) or list(self.factors) != sorted(self.factors):
            raise ValueError(f"sanity factors must be positive and increasing, got {list(self.factors)}")
        if not 0 < self.unbounded_eps <= 1:
            raise ValueError(f"sanity unbounded_eps must be in (0, 1], got {self.unbounded_eps}")

    def strong(self, eps: float) -> AttackSpec:
        """The long attack of the steps check: PGD-100, steps of eps/10, uniform restarts."""
        return AttackSpec("pgd", {"eps": eps, "steps": self.strong_steps, "step_size": eps / 10,
                                  "restarts": self.strong_restarts, "random_start": "uniform"},
                          f"PGD-{self.strong_steps}x{self.strong_restarts}")

    def confirm(self, eps: float) -> list[AttackSpec]:
        """The stronger white-box attacks a Square-only point must survive to count: APGD-T (the
        library's 9 targets, 100 iterations), then PGD on the CW margin, many steps and restarts."""
        name = f"PGD-CW-{self.confirm_steps}x{self.confirm_restarts}"
        return [AttackSpec("apgd_t", {"eps": eps}, "APGD-T"),
                AttackSpec("pgd", {"eps": eps, "loss": "cw", "steps": self.confirm_steps, "step_size": eps / 10,
                                   "restarts": self.confirm_restarts, "random_start": "uniform"}, name)]


def subsample(n: int, points: int, seed: int) -> torch.Tensor:
    """`points` distinct indices of [0, n) (all of them when n <= points), sorted, under `seed`."""
    if n <= points:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:points].sort().values


# ---- the robustness curve and the unbounded attack --------------------------------------------

def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, params: SanityParams,
                     seed: int, batch_size: int) -> dict[float, torch.Tensor]:
    """Per-point correctness under PGD at each eps multiple (steps of eps/4); eps 0 is clean."""
    clean = clean_correct(model, x, y, batch_size)
    curve = {0.0: clean}
    for factor in params.factors:
        e = min(1.0, factor * eps)
        spec = AttackSpec("pgd", {"eps": e, "steps": params.curve_steps})
        curve[e] = robust_correct(model, x, y, spec, seed=seed, batch_size=batch_size, clean=clean)
    return curve


def monotone_flag(curve: dict[float, torch.Tensor]) -> Flag:
    """Robust accuracy must not rise with eps (a larger ball contains the smaller one)."""
    eps = sorted(curve)
    correct = [int(curve[e].sum()) for e in eps]
    n = len(curve[eps[0]])
    figures = {"eps": eps, "accuracy": [c / n for c in correct], "n": n}
    rises = [(correct[i + 1] - correct[i], eps[i], eps[i + 1]) for i in range(len(eps) - 1)]
    rise, low, high = max(rises)
    if rise > POINT_SHARE * n:
        return Flag("monotone_eps", "fail", f"robust accuracy rises by {share(rise, n)} from eps {low:.4g} to "
                    f"{high:.4g}: the attack does not converge (steps overshoot) or gradients are masked", figures)
    return Flag("monotone_eps", "ok", "robust accuracy falls with eps: " + ", ".join(
        f"{e:.4g}: {c / n:.1%}" for e, c in zip(eps, correct)), figures)


def unbounded_flag(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, params: SanityParams, seed: int,
                   batch_size: int) -> Flag:
    """PGD at eps 1 (any image is reachable) must break ~every point."""
    eps = params.unbounded_eps
    spec = AttackSpec("pgd", {"eps": eps, "steps": params.unbounded_steps, "step_size": eps / 10})
    robust = robust_correct(model, x, y, spec, seed=seed, batch_size=batch_size)
    rate = float(robust.float().mean())
    figures = {"eps": eps, "steps": params.unbounded_steps, "robust": rate, "n": len(y)}
    if rate > UNBOUNDED_MAX:
        return Flag("unbounded", "fail", f"PGD at eps {eps:g} leaves {rate:.1%} robust accuracy (must be ~0%): "
                    "gradients are masked or the loss saturates", figures)
    return Flag("unbounded", "ok", f"PGD at eps {eps:g} reaches {rate:.1%} robust accuracy", figures)


# ---- more steps and restarts ------------------------------------------------------------------

def steps_flag(weak: torch.Tensor, strong: torch.Tensor, weak_label: str, strong_label: str) -> Flag:
    """More steps and restarts must not raise robust accuracy (beyond the slack: per point the two
    attacks may disagree on a few points, their starts and step sizes differ); a large drop under
    the long attack means the short one (the suite's) is too weak."""
    n = len(weak)
    weak_rate, strong_rate = float(weak.float().mean()), float(strong.float().mean())
    figures = {"weak": weak_label, "strong": strong_label, "weak_robust": weak_rate, "strong_robust": strong_rate,
               "missed_by_strong": int((strong & ~weak).sum()), "n": n}
    rates = f"{weak_rate:.1%} -> {strong_rate:.1%}"
    if strong_rate - weak_rate > POINT_SHARE:
        return Flag("more_steps", "fail", f"{strong_label} raises robust accuracy over {weak_label} ({rates}; "
                    f"it misses {share(figures['missed_by_strong'], n)} {weak_label} breaks)", figures)
    if weak_rate - strong_rate > STEPS_DROP:
        return Flag("more_steps", "warn", f"{strong_label} lowers robust accuracy by {weak_rate - strong_rate:.1%} "
                    f"vs {weak_label} ({rates}): {weak_label} is too weak", figures)
    return Flag("more_steps", "ok", f"{weak_label} vs {strong_label}: {rates}", figures)


# ---- randomness, outputs ----------------------------------------------------------------------

@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)])


def randomness_flag(model: nn.Module, x: torch.Tensor, *, batch_size: int, eot: bool) -> Flag:
    """Two identical forward passes must agree, unless the suite attacks with EOT (AutoAttack
    `rand`). Runs the model as handed over (no eval-mode check: that is what it inspects)."""
    first, second = _logits(model, x, batch_size), _logits(model, x, batch_size)
    change = float((first - second).abs().amax() / first.abs().amax().clamp_min(1e-12))
    flips = int((first.argmax(1) != second.argmax(1)).sum())
    figures = {"relative_change": change, "flips": flips, "n": len(x), "eot": eot}
    if change <= RANDOM_TOL:
        return Flag("randomness", "ok", "deterministic: two identical forward passes agree", figures)
    if eot:
        return Flag("randomness", "ok", f"randomized model (logits change by {change:.2g}) evaluated with EOT", figures)
    return Flag("randomness", "fail", f"logits change by {change:.2g} between two identical forward passes "
                f"({flips} predictions flip): a randomized model, evaluate it with EOT (the `rand` suite)", figures)


def logits_flag(model: nn.Module, x: torch.Tensor, *, batch_size: int, tol: float = 1e-5) -> Flag:
    """The outputs must be logits: probabilities saturate CE and DLR and mask the gradients."""
    out = _logits(model, x, batch_size)
    probabilities = bool(out.min() > -tol and out.max() < 1 + tol and ((out.sum(1) - 1).abs() < tol).all())
    figures = {"min": float(out.min()), "max": float(out.max()), "probabilities": probabilities}
    if probabilities:
        return Flag("logits", "fail", "the outputs are probabilities (in [0, 1], rows sum to 1), not logits: "
                    "attack losses on them saturate", figures)
    return Flag("logits", "ok", f"outputs are logits (range [{figures['min']:.3g}, {figures['max']:.3g}])", figures)


# ---- transfer from a surrogate ----------------------------------------------------------------

def transfer_correct(surrogate: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec,
                     *, seed: int, batch_size: int) -> torch.Tensor:
    """Per point: `target` correct on x and on the adversarial example crafted on `surrogate`."""
    require_eval_mode(surrogate)
    require_eval_mode(target)
    correct = clean_correct(target, x, y, batch_size)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        x_adv = run_attack(spec, surrogate, xb, yb, seed=seed + start)
        check_perturbation(x_adv, xb, spec.eps)
        correct[start:start + batch_size] &= predict(target, x_adv, batch_size) == yb
    return correct


def confirm_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, params: SanityParams,
                    seed: int, batch_size: int) -> tuple[torch.Tensor, dict[str, int]]:
    """Per point: correct under every attack of `params.confirm(eps)`, run as a cascade (each on the
    points the previous ones leave); and how many points each attack broke."""
    robust = clean_correct(model, x, y, batch_size)
    broken = {}
    for spec in params.confirm(eps):
        before = int(robust.sum())
        robust = robust_correct(model, x, y, spec, seed=seed, batch_size=batch_size, clean=robust)
        broken[spec.display] = before - int(robust.sum())
    return robust, broken


def run_model_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, weak: AttackSpec,
                     params: SanityParams, eot: bool, seed: int,
                     batch_size: int) -> tuple[list[Flag], torch.Tensor]:
    """Every model check on (x, y); returns the flags and the per-point correctness under both
    PGD attacks of the steps check at eps (the white-box reference of the transfer check)."""
    curve = robustness_curve(model, x, y, eps=eps, params=params, seed=seed, batch_size=batch_size)
    weak = weak.with_defaults(eps=eps)
    strong = params.strong(eps)
    clean = curve[0.0]
    weak_mask = robust_correct(model, x, y, weak, seed=seed, batch_size=batch_size, clean=clean)
    strong_mask = robust_correct(model, x, y, strong, seed=seed, batch_size=batch_size, clean=clean)
    randomness = randomness_flag(model, x, batch_size=batch_size, eot=eot)
    deterministic = randomness.figures["relative_change"] <= RANDOM_TOL
    flags = [monotone_flag(curve), unbounded_flag(model, x, y, params=params, seed=seed, batch_size=batch_size),
             steps_flag(weak_mask, strong_mask, weak.display, strong.display),
             gradient_flag(model, x, y, batch_size=batch_size),
             quality_flag(model, x, y, batch_size=batch_size, deterministic=deterministic),
             randomness, logits_flag(model, x, batch_size=batch_size)]
    return flags, weak_mask & strong_mask
