"""Native PGD (input gradients only, torch.autograd.grad) vs a straightforward PGD that calls
loss.backward() and so also computes every weight gradient. Same model, data, steps; images/s.

    python -m benchmarks.pgd_attack [--model resnet18] [--batch 32] [--steps 10] [--device cpu]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from attacks import pgd
from attacks.pgd import project
from benchmarks.common import device_name, median_seconds, print_table
from trainers.models import DataCfg, build_model
from trainers.modes import eval_mode


def naive_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int) -> torch.Tensor:
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        model.zero_grad()
        loss.backward()  # weight gradients too: the waste the native loop avoids
        x_adv = project(x_adv.detach() + step * x_adv.grad.sign(), x, eps)
    return x_adv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=10, data_cfg=DataCfg((3, 32, 32), (0.5,) * 3, (0.25,) * 3)).to(device)
    x, y = torch.rand(args.batch, 3, 32, 32, device=device), torch.randint(0, 10, (args.batch,), device=device)
    eps = 8 / 255
    with eval_mode(model):
        native = median_seconds(lambda: pgd(model, x, y, eps=eps, steps=args.steps, random_start="none",
                                            keep_best=False), device, args.repeats)
        naive = median_seconds(lambda: naive_pgd(model, x, y, eps, eps / 4, args.steps), device, args.repeats)
    per = lambda s: f"{args.batch / s:.1f} images/s"  # noqa: E731
    print_table(f"PGD-{args.steps}, {args.model}, batch {args.batch}, {device_name(device)}",
                [("loss.backward() (weight grads too)", naive, per(naive)),
                 ("native (input grads only)", native, per(native))], "loss.backward() (weight grads too)")


if __name__ == "__main__":
    main()
