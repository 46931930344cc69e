"""A PGD-AT training epoch on CIFAR-shaped synthetic data (ResNet-18 by default) through the real
training loop: images/s, and on a GPU bf16 autocast + channels_last vs fp32, with the device name.

    python -m benchmarks.train_epoch [--model resnet18] [--images 2048] [--batch 128]
"""
from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch

from benchmarks.common import device_name, print_table
from trainers import TrainConfig, fit
from trainers.config import from_dict


def epoch_seconds(*, model: str, images: int, batch: int, steps: int, device: str, precision: str,
                  channels_last: bool, compiled: bool = False, model_kwargs: dict[str, Any] | None = None) -> float:
    """Seconds of the second PGD-`steps` AT epoch (the first pays the warm-up) of `model` on
    `images` CIFAR-shaped synthetic images through trainers.fit."""
    with tempfile.TemporaryDirectory() as out:
        cfg = from_dict(TrainConfig, {
            "epochs": 2, "output_dir": out, "device": device, "precision": precision, "channels_last": channels_last,
            "compile": compiled, "model": {"arch": model, "kwargs": model_kwargs or {}},
            "method": {"name": "pgd_at", "attack": {"steps": steps}},
            "data": {"name": "synthetic", "batch_size": batch, "options": {
                "image_size": 32, "channels": 3, "train_size": images, "val_size": 64, "test_size": 64}},
            "validation": {"pgd_steps": 1, "test_at_end": False}})
        history = fit(cfg).history
    return history[-1]["epoch_time"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    configs = [("fp32", False)] + ([("bf16", False), ("bf16", True)] if args.device == "cuda" else [])
    rows = []
    for precision, channels_last in configs:
        sec = epoch_seconds(model=args.model, images=args.images, batch=args.batch, steps=args.steps,
                            device=args.device, precision=precision, channels_last=channels_last)
        rows.append((f"{precision}{' + channels_last' if channels_last else ''}", sec, f"{args.images / sec:.0f} images/s"))
    print_table(f"PGD-{args.steps} AT epoch, {args.model}, {args.images} images of 3x32x32, batch {args.batch}, "
                f"{device_name(torch.device(args.device))}", rows, "fp32")


if __name__ == "__main__":
    main()
