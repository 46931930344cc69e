"""Cost of the sanity checks of one checkpoint against the cost of its attack suite, both measured
in this run on the same model, data and device (repetitions interleaved, medians).

The sanity checks attack a fixed-size subsample, the suite every point of the split, so the ratio
shrinks as the split grows; the line "per 10,000 test points" scales the suite's time linearly
(the suite's cost per point is constant) to the size of the CIFAR test splits.

    python -m benchmarks.sanity_cost [--suite demo] [--points 200] [--dataset digits] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from attacks.sanity import SanityParams
from benchmarks.common import device_name, print_table, sync
from orchestrator.eval_pool import Cache, run_task
from orchestrator.evaluate import Target, load_suite, plan
from orchestrator.results import ResultsStore
from orchestrator.sanity import plan_sanity
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


def timed(tasks: list, cache: Cache) -> float:
    sync(cache.device)
    start = time.perf_counter()
    for task in tasks:
        run_task(task, cache)
    sync(cache.device)
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
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_model(f"{tmp}/model", trained(args.arch, data, device, args.train_steps).cpu(),
                          dataset=data["name"])
        suite = plan([Target(str(ckpt), "model")], data=data, split="test", specs=load_suite(args.suite),
                     shard_size=10 ** 6, seed=0, batch_size=256)
        checks = plan_sanity(suite, ResultsStore(Storage(f"{tmp}/runs")), sweep="bench",
                             params=SanityParams(points=args.points))
        cache = Cache(device)
        timed(checks[:1], cache)  # warm-up: model and data loading, kernels
        suite_s, sanity_s = [], []
        for _ in range(args.repeats):
            suite_s.append(timed(suite, cache))
            sanity_s.append(timed(checks, cache))
    n = suite[0].stop
    suite_t, sanity_t = statistics.median(suite_s), statistics.median(sanity_s)
    print_table(f"sanity checks ({args.points}-point subsample) vs the {args.suite!r} suite on {n} {data['name']} test "
                f"points, {args.arch}, {device_name(device)}; ratio column = suite time / row time",
                [(f"suite ({len(suite)} attacks)", suite_t, ""),
                 ("sanity checks", sanity_t, f"{sanity_t / suite_t:.1%} of the suite"),
                 ("suite per 10,000 test points (scaled)", suite_t * 10_000 / n,
                  f"sanity = {sanity_t / (suite_t * 10_000 / n):.2%} of it")], f"suite ({len(suite)} attacks)")


if __name__ == "__main__":
    main()
