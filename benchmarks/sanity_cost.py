"""Cost of the sanity checks of one checkpoint against the cost of its attack suite, both measured
in this run on the same model, data and device (repetitions interleaved, medians).

The sanity checks attack a fixed-size subsample, the suite every point of the split, so the ratio
shrinks as the split grows; the line "per 10,000 test points" scales the suite's time linearly
(the suite's cost per point is constant) to the size of the CIFAR test splits. Two lines show
parts on their own: the gradient-quality check (inside the model checks), and the re-attack of
the points only Square broke (after the suite; none when the suite has no Square). That one is
bounded by its sample (`confirm_points`): its worst case, a full sample the stronger attacks
hardly break, is timed on the same model behind input quantization (zero gradients).

    python -m benchmarks.sanity_cost [--suite demo] [--points 200] [--dataset digits] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Callable

import torch
import torch.nn.functional as F

from attacks.autoattack import library_warnings
from attacks.sanity import SanityParams, confirm_correct, subsample
from attacks.scoring import clean_correct
from attacks.sanity_gradients import quality_flag
from benchmarks.common import device_name, print_table, sync
from orchestrator.eval_pool import Cache, run_task
from orchestrator.evaluate import Target, execute, load_suite, plan
from orchestrator.results import ResultsStore
from orchestrator.sanity import plan_confirmations, plan_sanity
from orchestrator.storage import Storage
from trainers.checkpoint import save_model
from trainers.data import as_float, load_dataset
from trainers.models import DataCfg, build_model


def trained(arch: str, data: dict, device: torch.device, steps: int) -> torch.nn.Module:
    """A few seconds of Adam, so clean accuracy (and so the attacked points) is realistic."""
    ds = load_dataset(**data)
    info = ds.info
    torch.manual_seed(0)
    size = (info.channels, info.image_size, info.image_size)
    model = build_model(arch, num_classes=info.num_classes, data_cfg=DataCfg(size, info.mean, info.std)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = as_float(ds.train.x).to(device), ds.train.y.to(device)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (128,), device=device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


class Quantized(torch.nn.Module):
    """The model on inputs rounded to 16 levels: zero input gradients, so no gradient attack breaks anything."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 16) / 16)


def timed(tasks: list, cache: Cache) -> float:
    return clocked(lambda: [run_task(task, cache) for task in tasks], cache.device)


def clocked(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    with library_warnings():
        fn()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="demo")
    p.add_argument("--points", type=int, default=200, help="sanity subsample")
    p.add_argument("--dataset", default="digits", choices=["digits", "synthetic"])
    p.add_argument("--test-size", type=int, default=1000, help="synthetic only: test split size")
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    data = {"name": "digits"} if args.dataset == "digits" else {
        "name": "synthetic", "image_size": 32, "channels": 3, "train_size": 2048, "test_size": args.test_size}
    params = SanityParams(points=args.points)
    with tempfile.TemporaryDirectory() as tmp:
        model = trained(args.arch, data, device, args.train_steps)
        ckpt = save_model(f"{tmp}/model", model.cpu(), dataset=data["name"])
        suite = plan([Target(str(ckpt), "model")], data=data, split="test", specs=load_suite(args.suite),
                     shard_size=10 ** 6, seed=0, batch_size=256)
        store = ResultsStore(Storage(f"{tmp}/runs"))
        execute(suite, store, sweep="bench", local=True, sanity=None)  # the suite's rows, to plan the confirmation
        checks = plan_sanity(suite, store, sweep="bench", params=params)
        confirms = plan_confirmations(suite, store, sweep="bench", params=params)
        cache = Cache(device)
        timed(checks[:1], cache)  # warm-up: model and data loading, kernels
        split = cache.dataset(data).split("test")
        idx = subsample(len(split.y), args.points, 0)
        x, y = as_float(split.x[idx]).to(device), split.y[idx].to(device)
        model = model.to(device).eval()
        masked = Quantized(model).eval()
        worst = torch.nonzero(clean_correct(masked, x, y, 256)).flatten()[:params.confirm_points]
        times: dict[str, list[float]] = {k: [] for k in ("suite", "checks", "quality", "confirm", "worst")}
        for _ in range(args.repeats):
            times["suite"].append(timed(suite, cache))
            times["checks"].append(timed(checks, cache))
            times["quality"].append(clocked(lambda: quality_flag(model, x, y, batch_size=256, deterministic=True),
                                            device))
            times["confirm"].append(timed(confirms, cache))
            times["worst"].append(clocked(lambda: confirm_correct(masked, x[worst], y[worst], eps=suite[0].eps,
                                                                  params=params, seed=0, batch_size=256), device))
    n = suite[0].stop
    t = {k: statistics.median(v) for k, v in times.items()}
    sanity_t = t["checks"] + t["confirm"]
    scaled = t["suite"] * 10_000 / n
    only = f"{confirms[0].square_only} points only Square broke, {len(confirms[0].indices)} re-attacked" \
        if confirms else "no point only Square broke"
    print_table(f"sanity checks ({args.points}-point subsample) vs the {args.suite!r} suite on {n} {data['name']} test "
                f"points, {args.arch}, {device_name(device)}; ratio column = suite time / row time",
                [(f"suite ({len(suite)} attacks)", t["suite"], ""),
                 ("sanity checks", sanity_t, f"{sanity_t / t['suite']:.1%} of the suite"),
                 ("  model checks", t["checks"], f"{t['checks'] / t['suite']:.1%} of the suite"),
                 ("    of which gradient_quality", t["quality"], f"{t['quality'] / t['suite']:.2%} of the suite"),
                 ("  confirmation (black_box)", t["confirm"], f"{t['confirm'] / t['suite']:.1%} of the suite; {only}"),
                 (f"  confirmation, worst case ({len(worst)} pts)", t["worst"],
                  f"{t['worst'] / t['suite']:.1%} of the suite; quantized inputs (zero gradients)"),
                 ("suite per 10,000 test points (scaled)", scaled, f"sanity = {sanity_t / scaled:.2%} of it")],
                f"suite ({len(suite)} attacks)")


if __name__ == "__main__":
    main()
