"""Per-epoch time of the same training config run through Ray Train (1 worker) vs calling the
training function directly. Epochs are sized to take several seconds (the target is <= 1.05x).

    python -m benchmarks.ray_train_overhead [--images 4096] [--epochs 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

import ray
import torch

from benchmarks.common import print_table
from orchestrator.ray_train import Resources, run_training
from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from trainers import TrainConfig, fit
from trainers.config import from_dict


def epoch_walls(ends: list[float]) -> list[float]:
    """Seconds between consecutive epoch ends (everything an epoch costs, callbacks included)."""
    return [b - a for a, b in zip(ends, ends[1:])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4096)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = from_dict(TrainConfig, {
            "epochs": args.epochs, "output_dir": f"{tmp}/direct", "threads": 1,
            "model": {"arch": "small_cnn"}, "method": {"name": "pgd_at", "attack": {"steps": 5}},
            "data": {"name": "synthetic", "batch_size": 64, "options": {
                "image_size": 16, "channels": 3, "train_size": args.images, "val_size": 64, "test_size": 64}},
            "validation": {"pgd_steps": 1, "test_at_end": False}})
        torch.set_num_threads(1)
        direct = epoch_walls([r["wall_time"] for r in fit(cfg).history])
        ray.init(num_cpus=1, log_to_driver=False)
        storage = Storage(f"{tmp}/store")
        run_training(cfg, name="overhead", storage=storage, resources=Resources(cpus_per_worker=1),
                     results_uri=storage.uri, sweep="bench")
        ray.shutdown()
        rows_ = sorted(ResultsStore(storage).read(kind="epoch"), key=lambda r: r["epoch"])
        ray_epochs = epoch_walls([r["metrics"]["wall_time"] for r in rows_])
    rows = [("direct fit()", statistics.mean(direct), f"epochs 2..{args.epochs}, end to end"),
            ("Ray Train, 1 worker", statistics.mean(ray_epochs), "epoch end to epoch end: includes the report, "
                                                                  "checkpoint upload and results row")]
    print_table(f"Per-epoch time, PGD-5 AT, small_cnn, {args.images} synthetic images", rows, "direct fit()")
    print(f"Ray Train / direct: {rows[1][1] / rows[0][1]:.3f}x (target <= 1.05x)")


if __name__ == "__main__":
    main()
