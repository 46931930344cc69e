"""What the entry points show on the console: stage headers, one progress bar per stage (tqdm, on
stderr, only on a terminal), one line per finished teacher, trial or evaluation, and the tables.
Ray's own output stays in Ray's log files (their path is printed once, see ray_env.init_ray)."""
from __future__ import annotations

import math
import time
from typing import Any, Callable

from ray import tune
from tqdm import tqdm


def say(line: str) -> None:
    """Print a line on stdout without breaking a progress bar on stderr."""
    tqdm.write(line)


def progress(total: int, desc: str, unit: str, initial: int = 0) -> tqdm:
    """A progress bar; disabled (silent) when stderr is not a terminal, e.g. in CI logs."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=None, dynamic_ncols=True,
                bar_format="{desc}: {n_fmt}/{total_fmt} {unit} |{bar:24}| {elapsed}{postfix}")


def percent(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def trial_label(config: dict[str, Any], trial_id: str) -> str:
    """`<method>-<trial id>` for a search trial, `<method>-seed<k>` for a comparison run: the name
    its rows, TensorBoard run and report entry carry."""
    if "cell" in config:
        return f"{config['cell']['label']}-seed{config['cell']['seed']}"
    return f"{config['overrides']['method']['name']}-{trial_id}"


def trial_teachers(config: dict[str, Any]) -> list[str]:
    return config["cell"]["teacher_names"] if "cell" in config else config["teacher_names"]


def trial_line(label: str, teachers: list[str], result: dict[str, Any], seconds: float, status: str = "done") -> str:
    return (f"trial {label:<22} {status:<7} val clean {percent(result.get('best_val_clean')):>6}  "
            f"PGD {percent(result.get('best_val_pgd')):>6}  W-Robust {percent(result.get('best_val_w_robust')):>6}  "
            f"({result.get('epoch', -1) + 1} epochs, {seconds:.0f} s)  teachers {'+'.join(teachers)}")


def teacher_line(metrics: dict[str, Any], status: str) -> str:
    """One registry teacher: what it is and its test-split clean / PGD accuracy from training."""
    return (f"teacher {metrics['name']:<18} {metrics.get('arch', 'external'):<12} {metrics.get('method', '-'):<10} "
            f"test clean {percent(metrics.get('test_clean'))}  PGD {percent(metrics.get('test_pgd'))}  ({status})")


class TrialProgress(tune.Callback):
    """Runs in the sweep's driver: a bar of finished trials with the best validation W-Robust so
    far, and one line per finished (or failed, or early-stopped) trial."""

    def __init__(self, total: int, finished: Callable[[], int]) -> None:
        self.total, self.finished = total, finished
        self.best: tuple[float, str] = (-math.inf, "")
        self.started: dict[str, float] = {}
        self.bar: tqdm | None = None

    def setup(self, **info: Any) -> None:
        self.bar = progress(self.total, "trials", "done", initial=self.finished())

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.time())

    def _finish(self, trial: Any, status: str) -> None:
        result = trial.last_result or {}
        label = trial_label(trial.config, trial.trial_id)
        score = result.get("best_val_w_robust")
        if isinstance(score, (int, float)) and score > self.best[0]:
            self.best = (score, label)
        seconds = time.time() - self.started.get(trial.trial_id, time.time())
        say(trial_line(label, trial_teachers(trial.config), result, seconds, status))
        if self.bar is not None:
            if self.best[1]:
                self.bar.set_postfix_str(f"best val W-Robust {percent(self.best[0])} ({self.best[1]})", refresh=False)
            self.bar.update(1)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "done")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "FAILED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.bar is not None:
            self.bar.close()
