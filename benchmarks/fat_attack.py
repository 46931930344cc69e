"""FAT's early-stopped PGD as it runs now (each step only the still-active examples, the loop ends
when none is left) vs the masked loop it replaced (the whole batch every step, frozen rows held
by torch.where), and both vs PGD-10, at tau = 0, 1, 2: same model, data and seed, interleaved.
Also the share of rows actually run and whether the two give the same points.

    python -m benchmarks.fat_attack [--model resnet18] [--batch 32] [--clean-acc 0.8] [--device cpu]
"""
from __future__ import annotations

import argparse
import contextlib
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from attacks import early_stopped_pgd, pgd
from benchmarks.common import device_name, interleaved_seconds, print_table
from trainers.models import DataCfg, build_model
from trainers.modes import eval_mode

TAUS = (0, 1, 2)
CIFAR = DataCfg((3, 32, 32), (0.5,) * 3, (0.25,) * 3)


def labelled_batch(model: nn.Module, batch: int, clean_acc: float,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-shaped random images: a `clean_acc` share labelled with the model's own prediction
    (right at the start, so they take steps to break), the rest with another class (wrong at once)."""
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad(), eval_mode(model):
        pred = model(x).argmax(1)
    wrong = torch.arange(batch, device=device) >= round(clean_acc * batch)
    return x, torch.where(wrong, (pred + 1) % 10, pred)


def rows_run(model: nn.Module, attack: Callable[[], Any]) -> int:
    """Total batch rows of all forward passes one call of `attack` makes."""
    counted = [0]
    hook = model.register_forward_pre_hook(lambda m, args: counted.__setitem__(0, counted[0] + len(args[0])))
    try:
        attack()
    finally:
        hook.remove()
    return counted[0]


def fat_rows(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
             device: torch.device, repeats: int,
             autocast: Callable[[], Any] = contextlib.nullcontext) -> tuple[list[tuple[str, float, str]], list[str]]:
    """(rows for print_table with PGD-`steps` as baseline, one summary line per tau)."""
    def seeded() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(0)

    def run_pgd() -> torch.Tensor:
        with autocast():
            return pgd(model, x, y, eps=eps, steps=steps, random_start="uniform", keep_best=False,
                       generator=seeded())

    def run_fat(tau: int, buckets: int) -> torch.Tensor:
        with autocast():
            return early_stopped_pgd(model, x, y, eps=eps, tau=tau, steps=steps, generator=seeded(),
                                     buckets=buckets)

    base = f"PGD-{steps}"
    fns: dict[str, Callable[[], Any]] = {base: run_pgd}
    for tau in TAUS:
        fns[f"FAT tau={tau} masked (before)"] = partial(run_fat, tau, 0)
        fns[f"FAT tau={tau} compacted"] = partial(run_fat, tau, 8)
    with eval_mode(model):
        seconds = interleaved_seconds(fns, device, repeats)
        work = {name: rows_run(model, fn) / (len(x) * steps) for name, fn in fns.items()}
        same = {tau: (run_fat(tau, 8) == run_fat(tau, 0)).flatten(1).all(1).float().mean().item() for tau in TAUS}
    rows = [(name, sec, f"rows run: {work[name]:.0%} of {steps} x batch") for name, sec in seconds.items()]
    lines = []
    for tau in TAUS:
        masked, compacted = seconds[f"FAT tau={tau} masked (before)"], seconds[f"FAT tau={tau} compacted"]
        lines.append(f"FAT tau={tau}: speed-up of compacted over masked {masked / compacted:.2f}x; time vs {base}: "
                     f"compacted {compacted / seconds[base]:.2f}, masked {masked / seconds[base]:.2f}; "
                     f"same points as masked: {same[tau]:.0%} of examples")
    return rows, lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--clean-acc", type=float, default=0.8, help="share of examples right at the start")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=10, data_cfg=CIFAR).to(device)
    x, y = labelled_batch(model, args.batch, args.clean_acc, device)
    rows, lines = fat_rows(model, x, y, eps=8 / 255, steps=args.steps, device=device, repeats=args.repeats)
    print_table(f"FAT early-stopped PGD vs PGD-{args.steps}, {args.model}, batch {args.batch}, "
                f"{args.clean_acc:.0%} right at the start, {device_name(device)}", rows, f"PGD-{args.steps}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
