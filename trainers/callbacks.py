"""How the outside world (Ray reporting, TensorBoard, the results store, a progress line) plugs
into `trainers.loop.fit` without `trainers/` knowing about any of them."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    """One record per epoch: train metrics, validation metrics, lr, timing."""
    final: dict[str, Any] = field(default_factory=dict)
    """Last epoch's record plus test metrics of the best and last checkpoints."""
    last_dir: Path | None = None
    best_dir: Path | None = None


class Callback(Protocol):
    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """Called on every rank after each epoch; `checkpoint` is the saved 'last' directory on
        rank 0 and None elsewhere."""

    def on_fit_end(self, result: FitResult) -> None: ...


class PrintProgress:
    """One line per epoch on rank 0."""

    def __init__(self, name: str, epochs: int, rank: int = 0) -> None:
        self.name, self.epochs, self.rank = name, epochs, rank
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        if self.rank:
            return
        print(f"[{self.name}] epoch {epoch + 1}/{self.epochs}  loss {metrics['loss']:.4f}  "
              f"val clean {metrics['val_clean']:.2%}  pgd {metrics['val_pgd']:.2%}  "
              f"w-robust {metrics['val_w_robust']:.2%}  ({metrics['epoch_time']:.1f}s)", flush=True)

    def on_fit_end(self, result: FitResult) -> None:
        if self.rank or "test_clean" not in result.final:
            return
        f = result.final
        print(f"[{self.name}] best-on-validation, test: clean {f['test_clean']:.2%}  pgd {f['test_pgd']:.2%}  "
              f"w-robust {f['test_w_robust']:.2%}  ({time.perf_counter() - self.start:.0f}s total)", flush=True)
