"""The one training loop for every method (docs/design.md#one-training-loop): config in, checkpoints and per-epoch
metrics out through callbacks. Runs in a plain process or as one rank of a DDP group (Ray Train
sets that up; this file never imports Ray).

One step: lr for this step -> method.inner_max (the method puts the student in eval mode for
its attack) -> method.loss_terms (student in train mode) -> backward -> clip -> optimizer step.
Metrics stay on the device as running sums; the host syncs once per `SYNC_EVERY` steps to
stop on a non-finite loss, and once per epoch to report.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainers.callbacks import Callback, FitResult
from trainers.checkpoint import model_sidecar, read_tensors, write_checkpoint
from trainers.config import ConfigError, config_hash, to_dict
from trainers.data import Dataset, DatasetInfo, DeviceLoader
from trainers.distributed import DistInfo, all_reduce_max, all_reduce_sum, derive_seed, dist_info
from trainers.validation import evaluate_clean_pgd
from trainers.methods import Method, MethodContext, StepInfo
from trainers.models import DataCfg, build_model
from trainers.schedules import lr_at
from trainers.teachers import TeacherSet
from trainers.train_config import TrainConfig
from trainers.train_state import load_training_checkpoint, save_training_checkpoint

SYNC_EVERY = 50


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


@dataclass
class Run:
    cfg: TrainConfig
    dist: DistInfo
    device: torch.device
    data: Dataset
    eps: float
    model: nn.Module
    forward: nn.Module
    optimizer: torch.optim.Optimizer
    method: Method
    method_record: dict[str, Any]
    autocast: Any
    precision: Literal["bf16", "fp32"]
    """What the steps ran in (the config's "auto" resolved on this device); recorded in checkpoints."""
    channels_last: bool


def fit(cfg: TrainConfig, *, callbacks: Sequence[Callback] = (), resume_from: str | Path | None = None,
        device: torch.device | None = None) -> FitResult:
    """Train per `cfg`; resume from a training checkpoint directory if given. `device` overrides
    cfg.device (Ray Train passes the GPU it assigned to this worker)."""
    run = setup(cfg, device)
    out = Path(cfg.output_dir)
    history: list[dict[str, Any]] = []
    start, best_score, best_state = 0, -math.inf, None
    if resume_from is not None:
        state = load_training_checkpoint(resume_from, run.model, run.optimizer, run.device)
        run.method.load_state_dict(state["method"])
        start, best_score, history = state["epoch"] + 1, state["best_score"], state["history"]
        best_state = read_tensors(Path(resume_from).parent / "best", "model")
    loader = DeviceLoader(run.data.train, batch_size=cfg.data.batch_size, device=run.device, shuffle=True,
                          crop_padding=run.data.info.crop_padding if cfg.data.augment else 0,
                          flip=run.data.info.flip and cfg.data.augment, drop_last=True, rank=run.dist.rank,
                          world_size=run.dist.world_size, seed=cfg.seed, channels_last=run.channels_last)
    if len(loader) == 0:
        raise ConfigError("data.batch_size", f"{cfg.data.batch_size} exceeds the {loader.num_examples} "
                          "training examples per worker; no full batch to train on")
    for epoch in range(start, cfg.epochs):
        record = {"epoch": epoch, **train_epoch(run, loader, epoch)}
        record.update({f"val_{k}": v for k, v in _validate(run, run.data.val).items()},
                      wall_time=all_reduce_max(time.time(), run.device))
        score = record[f"val_{cfg.validation.select}"]
        record["is_best"] = score > best_score
        best_score = max(best_score, score)
        best = record if record["is_best"] else next(r for r in reversed(history) if r["is_best"])
        record.update({f"best_val_{k}": best[f"val_{k}"] for k in ("clean", "pgd", "w_robust")})
        history.append(record)
        if record["is_best"]:  # every rank keeps it: the final test evaluation is sharded over ranks
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
        last = None
        if run.dist.is_main:
            sidecar = _sidecar(run, record)
            last = save_training_checkpoint(out / "last", run.model, run.optimizer, sidecar=sidecar, state={
                "epoch": epoch, "best_score": best_score, "history": history, "method": run.method.state_dict()})
            if record["is_best"]:
                write_checkpoint(out / "best", {"model": run.model.state_dict()}, {"model": sidecar})
        for cb in callbacks:
            cb.on_epoch_end(epoch, record, last)
    result = FitResult(history=history, final=dict(history[-1]) if history else {},
                       last_dir=out / "last", best_dir=out / "best")
    if cfg.validation.test_at_end and best_state is not None:
        result.final.update(_test(run, best_state))
    for cb in callbacks:
        cb.on_fit_end(result)
    return result


def setup(cfg: TrainConfig, device: torch.device | None = None) -> Run:
    """Everything a run needs, built from the config (datasets, teachers, student, optimizer)."""
    dist = dist_info()
    device = device or _device(cfg.device, dist)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = cfg.data.load()
    info = data.info
    eps = cfg.eps if cfg.eps is not None else info.eps
    mcfg = cfg.method
    mdef = mcfg.definition
    mdef.check_teachers(len(cfg.teachers))
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    teachers = TeacherSet(cfg.teachers, dataset=info.name, num_classes=info.num_classes, device=device,
                          mode=getattr(mcfg, "teacher_mode", "eval"), channels_last=channels_last) if cfg.teachers else None
    torch.manual_seed(derive_seed(cfg.seed, 0x1417))  # same initial weights on every rank
    model = build_student(cfg, info).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    forward: nn.Module = model
    if dist.world_size > 1:
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        forward = torch.compile(forward)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    ctx = MethodContext(student=model, forward=forward, eps=eps, num_classes=info.num_classes, teachers=teachers)
    record = {"name": mdef.name, "profile": mcfg.profile, "config": to_dict(mcfg)}
    return Run(cfg, dist, device, data, eps, model, forward, _optimizer(cfg, model), mdef.build(mcfg, ctx),
               record, autocast, "bf16" if bf16 else "fp32", channels_last)


def build_student(cfg: TrainConfig, info: DatasetInfo) -> nn.Module:
    """The model the method trains (DARHT wraps the configured architecture in its head)."""
    arch, kwargs = cfg.model.arch, dict(cfg.model.kwargs)
    mdef = cfg.method.definition
    if mdef.student is not None:
        arch, kwargs = mdef.student(arch, kwargs, cfg.method, len(cfg.teachers))
    data_cfg = DataCfg((info.channels, info.image_size, info.image_size), info.mean, info.std)
    try:
        return build_model(arch, num_classes=info.num_classes, data_cfg=data_cfg, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError("model.kwargs", f"{cfg.model.arch}: {err}") from None


def preflight(cfg: TrainConfig, info: DatasetInfo) -> None:
    """Everything about `cfg` that can fail before training, checked without training: the method
    and its teacher count, and the student (built on the meta device, no memory used)."""
    cfg.method.definition.check_teachers(len(cfg.teachers))
    with torch.device("meta"):
        build_student(cfg, info)


def train_epoch(run: Run, loader: DeviceLoader, epoch: int) -> dict[str, float]:
    """One epoch of steps; returns the epoch means of the loss and the method's metrics."""
    cfg, model = run.cfg, run.model
    torch.manual_seed(derive_seed(cfg.seed, epoch, run.dist.rank))  # attack starts, dropout, mixing
    loader.set_epoch(epoch)
    sums: dict[str, torch.Tensor] = {}
    first_bad = torch.tensor(-1, device=run.device)
    steps, start = len(loader), time.perf_counter()
    for i, (x, y) in enumerate(loader):
        lr = lr_at(cfg.schedule, cfg.optim.lr, epoch=epoch, step=i, steps_per_epoch=steps, epochs=cfg.epochs)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        info = StepInfo(epoch=epoch, step=epoch * steps + i, lr_scale=lr / cfg.optim.lr)
        loss, metrics = training_step(run.method, model, run.optimizer, x, y, info, autocast=run.autocast,
                                      grad_clip=cfg.optim.grad_clip)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), i, first_bad)
        for key, value in {"loss": loss.detach(), **metrics}.items():
            value = torch.as_tensor(value, device=run.device).float()
            sums[key] = sums[key] + value if key in sums else value
        if (i + 1) % SYNC_EVERY == 0 or i + 1 == steps:
            _check_finite(run, first_bad, epoch)
    keys = sorted(sums)
    totals = all_reduce_sum(torch.stack([sums[k] for k in keys]).double()) / (steps * run.dist.world_size)
    seconds = all_reduce_max(time.perf_counter() - start, run.device)  # identical on every rank
    return {**dict(zip(keys, totals.tolist())), "lr": lr, "epoch_time": seconds,
            "images_per_s": steps * cfg.data.batch_size * run.dist.world_size / seconds}


def training_step(method: Method, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                  y: torch.Tensor, info: StepInfo, *, autocast: Any = contextlib.nullcontext,
                  grad_clip: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One step of any method: its attack (the method sets the student's mode for it), its loss
    with the student in train mode, backward, clip, update. Returns the loss and metrics."""
    with autocast():
        adv = method.inner_max(x, y, info)
        model.train()
        loss, metrics = method.loss_terms(x, y, adv, info)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss, metrics


def _check_finite(run: Run, first_bad: torch.Tensor, epoch: int) -> None:
    bad = int(first_bad.item())
    if bad >= 0:
        raise TrainingDiverged(f"{run.cfg.name}: non-finite loss at epoch {epoch + 1}, step {bad + 1}; "
                               f"the last good checkpoint is {Path(run.cfg.output_dir) / 'last'}")


def _validate(run: Run, split: Any, model: nn.Module | None = None) -> dict[str, float]:
    v = run.cfg.validation
    return evaluate_clean_pgd(model or run.model, split, eps=run.eps, pgd_steps=v.pgd_steps,
                              batch_size=run.cfg.data.eval_batch_size, device=run.device, dist=run.dist,
                              max_examples=v.max_examples, seed=run.cfg.seed)


def _test(run: Run, best_state: dict[str, torch.Tensor]) -> dict[str, float]:
    """Test-split clean/PGD of the best-on-validation and the last weights (never used to select)."""
    best = copy.deepcopy(run.model)
    best.load_state_dict(best_state)
    result = {"test_" + k: v for k, v in _validate(run, run.data.test, best).items()}
    result.update({"test_last_" + k: v for k, v in _validate(run, run.data.test, run.model).items()})
    return result


def _sidecar(run: Run, record: dict[str, Any]) -> dict[str, Any]:
    metrics = {k: v for k, v in record.items() if isinstance(v, (int, float))}
    return model_sidecar(run.model, dataset=run.data.info.name, method=run.method_record, metrics=metrics,
                         config_hash=config_hash(run.cfg),
                         extra={"threat_eps": run.eps, "teachers": list(run.cfg.teachers), "seed": run.cfg.seed,
                                "selection": f"val_{run.cfg.validation.select}",
                                "training_precision": run.precision, "channels_last": run.channels_last,
                                "batch": {"per_worker": run.cfg.data.batch_size, "workers": run.dist.world_size}})


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def _device(name: str, dist: DistInfo) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device", "'cuda' requested but no GPU is available")
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    return torch.device("cpu")
