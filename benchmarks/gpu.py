"""The GPU figures in one run; `--tiny` runs the same code at toy sizes (the CPU test does).

1. A PGD-10 AT epoch of a CIFAR ResNet-18 on CIFAR-shaped synthetic data through trainers.fit:
   fp32 vs bf16 autocast + channels_last, vs torch.compile (the training forward; the attack runs
   eager) and vs cudnn.benchmark; the CIFAR-10 epoch (50 000 images) projected from images/s,
   against the goal of <= 20 s on an H100-class GPU.
2. A DARHT step with a ViT-B/16 teacher at 224 (timm; whether its attention runs through SDPA
   is printed) and a WRN-34-10 teacher vs a PGD-AT step of the same student: with CE-PGD on the
   whole batch (the same attack work: the difference is the teachers and the head) and in the
   paper profile (FAT on about half the batch, C = 4 MC samples; 80 % of the labels are the
   student's own prediction, so FAT stops as it would mid-training); the teachers' forwards alone.
3. Evaluation throughput of PGD-10 and APGD-CE (the official code, 100 iterations), in fp32 as
   the evaluation runs them, on points the model gets right (so every point is attacked).
4. FAT's early-stopped PGD, compacted vs masked, vs PGD-10 (benchmarks.fat_attack).
Each with peak GPU memory. Sections 2-4 interleave their repeats; section 1 runs one fit per leg.
Sections 2 and 4 use the training loop's precision: bf16 autocast + channels_last on a GPU.

Needs torch, torchvision, timm, pyyaml, safetensors and pyautoattack (pure Python; carry its
wheel where it is not installed); imports no Ray.

    python -m benchmarks.gpu [--tiny] [--images 10240] [--sections at_epoch darht eval fat]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import traceback
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from attacks import autoattack, pgd
from benchmarks.common import (device_name, interleaved_seconds, peak_memory, print_table, reset_peak,
                               sync)
from benchmarks.fat_attack import CIFAR, fat_rows, labelled_batch
from benchmarks.train_epoch import epoch_seconds
from trainers.checkpoint import save_model
from trainers.loop import training_step
from trainers.methods import MethodContext, StepInfo, method_config
from trainers.models import build_model
from trainers.modes import eval_mode
from trainers.teachers import TeacherSet

CIFAR10_TRAIN = 50_000
GOAL_SECONDS = 20.0
SECTIONS = ("at_epoch", "darht", "eval", "fat")


@dataclass(frozen=True)
class Sizes:
    student: str = "resnet18"
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    images: int = 10_240
    """Training images of the timed AT epoch (the CIFAR-10 epoch is projected from images/s)."""
    batch: int = 128
    steps: int = 10
    vit: dict[str, Any] = field(default_factory=lambda: {"patch_size": 16, "img_size": 224})
    wrn: dict[str, Any] = field(default_factory=lambda: {"depth": 34, "widen_factor": 10})
    eval_images: int = 1024
    eval_batch: int = 512
    apgd_iter: int = 100
    repeats: int = 5


FULL = Sizes()
TINY = Sizes(student="small_cnn", student_kwargs={"width": 8, "hidden": 32}, images=64, batch=16, steps=2,
             vit={"patch_size": 16, "img_size": 64, "depth": 1, "embed_dim": 64, "num_heads": 2},
             wrn={"depth": 10, "widen_factor": 1}, eval_images=32, eval_batch=16, apgd_iter=5, repeats=2)
# (label, precision, channels_last, torch.compile, cudnn.benchmark)
LEGS = (("fp32", "fp32", False, False, False),
        ("bf16 + channels_last", "bf16", True, False, False),
        ("bf16 + channels_last + compile", "bf16", True, True, False),
        ("bf16 + channels_last + cudnn.benchmark", "bf16", True, False, True))


def at_leg(s: Sizes, device: torch.device, precision: str, channels_last: bool, compiled: bool,
           benchmark: bool) -> tuple[float, str]:
    """(epoch seconds, notes) of one leg; cudnn.benchmark is restored afterwards."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = benchmark or before
    reset_peak(device)
    try:
        sec = epoch_seconds(model=s.student, model_kwargs=s.student_kwargs, images=s.images, batch=s.batch,
                            steps=s.steps, device=device.type, precision=precision, channels_last=channels_last,
                            compiled=compiled)
    finally:
        torch.backends.cudnn.benchmark = before
    notes = (f"{s.images / sec:.0f} images/s, CIFAR-10 epoch {CIFAR10_TRAIN * sec / s.images:.1f} s, "
             f"{peak_memory(device)}")
    if precision == "fp32" and device.type == "cuda":
        notes += f", cuDNN TF32 {'on' if torch.backends.cudnn.allow_tf32 else 'off'}"
    return sec, notes


def at_epoch(s: Sizes, device: torch.device) -> None:
    rows, skipped = [], []
    for label, precision, channels_last, compiled, benchmark in LEGS:
        if (compiled or benchmark) and device.type != "cuda":
            skipped.append((label, "skipped (no GPU)"))
            continue
        try:
            rows.append((label, *at_leg(s, device, precision, channels_last, compiled, benchmark)))
        except Exception as err:  # noqa: BLE001  (torch.compile can fail where the baseline runs)
            if label == "fp32":
                raise
            skipped.append((label, f"failed: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}"))
    print_table(f"PGD-{s.steps} AT epoch (the second of a fit), {s.student}, {s.images} images of 3x32x32, "
                f"batch {s.batch}, {device_name(device)}", rows, "fp32")
    for label, why in skipped:
        print(f"{label:<40}{why}")
    label, sec, _ = min(rows, key=lambda r: r[1])
    projected = CIFAR10_TRAIN * sec / s.images
    print(f"projected CIFAR-10 PGD-{s.steps} AT epoch: {projected:.1f} s ({label}); goal <= {GOAL_SECONDS:.0f} s "
          f"on an H100-class GPU: {'met' if projected <= GOAL_SECONDS else 'not met'} on {device_name(device)}")


def train_step(method: Any, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
               autocast: Callable[[], Any]) -> None:
    """One step as trainers.loop runs it (same mixing draws every call: seeded)."""
    torch.manual_seed(0)
    training_step(method, model, opt, x, y, StepInfo(epoch=0, step=0, lr_scale=1.0), autocast=autocast)


def attention_kind(model: nn.Module) -> str:
    flags = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    return "SDPA attention" if flags and all(flags) else "eager attention"


def student_step(raw: dict[str, Any], s: Sizes, teachers: TeacherSet | None,
                 autocast: Callable[[], Any], device: torch.device) -> tuple[Callable[..., None], nn.Module]:
    """(step(x, y), the student) for method config `raw`; lr 0, so every repeat does the same work."""
    mcfg = method_config(raw)
    mdef = mcfg.definition
    arch, kwargs = (mdef.student(s.student, s.student_kwargs, mcfg, len(teachers)) if mdef.student
                    else (s.student, s.student_kwargs))
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, data_cfg=CIFAR, **kwargs).to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    method = mdef.build(mcfg, MethodContext(student=model, forward=model, eps=8 / 255, num_classes=10,
                                            teachers=teachers))
    return partial(train_step, method, model, opt, autocast=autocast), model


def load_teachers(s: Sizes, device: torch.device) -> tuple[TeacherSet, str]:
    """ViT-B/16 (at s.vit's size) and WRN teachers through a checkpoint, as training loads them."""
    with tempfile.TemporaryDirectory() as tmp:
        vit = build_model("vit_base", num_classes=10, data_cfg=CIFAR, **s.vit)
        names = (f"ViT-B/16 at {s.vit['img_size']} ({attention_kind(vit)}) + "
                 f"WRN-{s.wrn['depth']}-{s.wrn['widen_factor']}")
        paths = [save_model(f"{tmp}/vit", vit, dataset="synthetic"),
                 save_model(f"{tmp}/wrn", build_model("wide_resnet", num_classes=10, data_cfg=CIFAR, **s.wrn),
                            dataset="synthetic")]
        return TeacherSet(paths, dataset="synthetic", num_classes=10, device=device,
                          channels_last=device.type == "cuda"), names


def darht_step(s: Sizes, device: torch.device) -> None:
    gpu = device.type == "cuda"
    autocast = partial(torch.autocast, "cuda", dtype=torch.bfloat16) if gpu else contextlib.nullcontext
    teachers, names = load_teachers(s, device)
    base, full, paper = "PGD-AT step", "DARHT step, CE-PGD on all", "DARHT step, paper profile"
    alone = "teachers' forwards alone"
    steps = {base: student_step({"name": "pgd_at", "attack": {"steps": s.steps}}, s, None, autocast, device),
             full: student_step({"name": "darht", "attack": {"preset": "ce_pgd", "steps": s.steps}, "adv_prob": 1.0,
                                 "mc_samples": 1, "dropout": 0.0}, s, teachers, autocast, device),
             paper: student_step({"name": "darht", "attack": {"steps": s.steps}}, s, teachers, autocast, device)}
    x, y = labelled_batch(steps[paper][1], s.batch, 0.8, device)  # FAT stops as it would mid-training
    x = x.contiguous(memory_format=torch.channels_last) if gpu else x

    def teacher_forwards() -> None:
        with autocast():
            teachers.logits(x)

    fns = {name: partial(step, x, y) for name, (step, _) in steps.items()}
    rows = timed_rows({**fns, alone: teacher_forwards}, device, s.repeats, s.batch)
    print_table(f"DARHT step, student {s.student}, teachers {names}, PGD/FAT-{s.steps}, batch {s.batch}, "
                f"{'bf16 + channels_last' if gpu else 'fp32'}, {device_name(device)}", rows, base)
    sec = {name: t for name, t, _ in rows}
    print(f"time ratio DARHT / PGD-AT: CE-PGD on all {sec[full] / sec[base]:.3f}, paper profile "
          f"{sec[paper] / sec[base]:.3f}; teachers' forwards / DARHT CE-PGD step: "
          f"{sec[alone] / sec[full]:.3f}")


def timed_rows(fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int,
               images: int) -> list[tuple[str, float, str]]:
    """(name, median seconds, images/s and peak memory) per fn, the repeats interleaved."""
    seconds = interleaved_seconds(fns, device, repeats)
    rows = []
    for name, fn in fns.items():
        reset_peak(device)
        fn()
        sync(device)
        rows.append((name, seconds[name], f"{images / seconds[name]:.0f} images/s, {peak_memory(device)}"))
    return rows


def eval_throughput(s: Sizes, device: torch.device) -> None:
    torch.manual_seed(0)
    model = build_model(s.student, num_classes=10, data_cfg=CIFAR, **s.student_kwargs).to(device).eval()
    x = torch.rand(s.eval_images, 3, 32, 32, device=device)
    with torch.no_grad():
        y = model(x).argmax(1)  # all right: every point is attacked

    def run_pgd() -> None:
        gen = torch.Generator(device=device).manual_seed(0)
        for i in range(0, len(x), s.eval_batch):
            pgd(model, x[i:i + s.eval_batch], y[i:i + s.eval_batch], eps=8 / 255, steps=s.steps, generator=gen)

    def run_apgd() -> None:
        autoattack(model, x, y, eps=8 / 255, seed=0, attacks=["apgd-ce"], n_iter=s.apgd_iter, batch_size=s.eval_batch)

    pgd_name, apgd_name = f"PGD-{s.steps} (keep best)", f"APGD-CE ({s.apgd_iter} iterations)"
    with eval_mode(model):
        rows = timed_rows({pgd_name: run_pgd, apgd_name: run_apgd}, device, s.repeats, s.eval_images)
    print_table(f"Evaluation throughput, {s.student}, {s.eval_images} images, batch {s.eval_batch}, fp32, "
                f"{device_name(device)}", rows, pgd_name)


def fat(s: Sizes, device: torch.device) -> None:
    gpu = device.type == "cuda"
    autocast = partial(torch.autocast, "cuda", dtype=torch.bfloat16) if gpu else contextlib.nullcontext
    torch.manual_seed(0)
    model = build_model(s.student, num_classes=10, data_cfg=CIFAR, **s.student_kwargs).to(device)
    x, y = labelled_batch(model, s.batch, 0.8, device)
    if gpu:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    rows, lines = fat_rows(model, x, y, eps=8 / 255, steps=s.steps, device=device, repeats=s.repeats,
                           autocast=autocast)
    print_table(f"FAT early-stopped PGD vs PGD-{s.steps}, {s.student}, batch {s.batch}, 80% right at the start, "
                f"{'bf16 + channels_last' if gpu else 'fp32'}, {device_name(device)}", rows, f"PGD-{s.steps}")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes: checks the script, measures nothing")
    p.add_argument("--images", type=int, help=f"training images of the timed AT epoch (default {FULL.images})")
    p.add_argument("--repeats", type=int)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    s = TINY if args.tiny else FULL
    s = replace(s, images=args.images or s.images, repeats=args.repeats or s.repeats)
    device = torch.device(args.device)
    sys.stdout.reconfigure(line_buffering=True)  # a run stopped at its time limit keeps what it printed
    print(f"benchmarks.gpu on {device_name(device)}, torch {torch.__version__}{' (tiny sizes)' if args.tiny else ''}")
    failed = []
    for name in args.sections:
        try:  # one broken section must not cost the figures of the others
            {"at_epoch": at_epoch, "darht": darht_step, "eval": eval_throughput, "fat": fat}[name](s, device)
        except Exception as err:  # noqa: BLE001
            failed.append(name)
            print(f"\nsection {name} failed: {type(err).__name__}: {err}")
            traceback.print_exc()
    if failed:
        sys.exit(f"benchmarks.gpu: sections failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
