"""DARHT step cost. (1) MC dropout: a student step with C = 1, 4, 16 samples, batched (the
backbone runs once, only the head is repeated) vs the naive way (C full forward passes).
(2) A DARHT step with J teachers vs a plain PGD-AT step of the same student, measured and as
predicted from FLOP counts (torch.utils.flop_counter): the overhead should be the teachers'
forward passes and nothing else.

    python -m benchmarks.darht_step [--student resnet18] [--batch 32] [--teachers resnet18 vit_tiny]
"""
from __future__ import annotations

import argparse
import tempfile

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import device_name, median_seconds, print_table
from trainers.checkpoint import save_model
from trainers.loop import training_step
from trainers.methods import MethodContext, StepInfo, method_config
from trainers.methods.darht import darht_loss
from trainers.models import DataCfg, build_model
from trainers.teachers import TeacherSet

CFG = DataCfg((3, 32, 32), (0.5,) * 3, (0.25,) * 3)


def student_step(model, opt, x, y, teacher_JBK, samples: int, naive: bool) -> None:
    model.train()
    if naive:  # C full forward passes, each with its own dropout mask
        outs = [model(x, with_map=True) for _ in range(samples)]
        logits, fmap = torch.stack([o[0] for o in outs]).mean(0), torch.stack([o[1] for o in outs]).mean(0)
    else:
        logits, fmap = model(x, with_map=True)
    loss, _ = darht_loss(logits, fmap, teacher_JBK, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def mc_scaling(args, device, x, y) -> None:
    rows = []
    teacher_JBK = torch.randn(len(args.teachers), len(x), 10, device=device)
    for samples in (1, 4, 16):
        torch.manual_seed(0)
        model = build_model("darht_student", num_classes=10, data_cfg=CFG, backbone=args.student,
                            num_teachers=len(args.teachers), dropout=0.1, mc_samples=samples).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        sec = median_seconds(lambda: student_step(model, opt, x, y, teacher_JBK, samples, False), device, args.repeats)
        rows.append((f"C={samples} batched head", sec, "backbone once"))
        if samples > 1:
            single = build_model("darht_student", num_classes=10, data_cfg=CFG, backbone=args.student,
                                 num_teachers=len(args.teachers), dropout=0.1, mc_samples=1).to(device)
            single.load_state_dict(model.state_dict())
            opt1 = torch.optim.SGD(single.parameters(), lr=0.01)
            sec = median_seconds(lambda: student_step(single, opt1, x, y, teacher_JBK, samples, True), device, args.repeats)
            rows.append((f"C={samples} naive", sec, f"{samples} full forward passes"))
    print_table(f"DARHT student step vs MC samples C, {args.student}, batch {len(x)}, {device_name(device)}",
                rows, "C=1 batched head")
    times = dict((name, sec) for name, sec, _ in rows)
    print(f"time ratio C=16 / C=1: batched {times['C=16 batched head'] / times['C=1 batched head']:.3f} "
          f"(target <= 1.15), naive {times['C=16 naive'] / times['C=1 batched head']:.2f}")


def method_step(method, model, opt, x, y) -> None:
    training_step(method, model, opt, x, y, StepInfo(epoch=0, step=0, lr_scale=1.0))


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def predicted_flops(model, teachers, x, y, steps: int) -> int:
    """FLOPs of one training step from its parts, each counted by FlopCounterMode: `steps` attack
    iterations (forward + input-gradient backward; FlopCounterMode cannot wrap autograd.grad, so
    they are counted as a backward with frozen weights), the training forward + backward, and the
    teachers' forward passes."""
    def attack_step():
        xa = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(xa), y).backward()

    def train_step():
        torch.nn.functional.cross_entropy(model(x), y).backward()

    model.train()
    train = counted(train_step)
    model.eval().requires_grad_(False)
    attack = counted(attack_step)
    model.requires_grad_(True)
    with torch.no_grad():
        teacher = counted(lambda: teachers.logits(x)) if teachers is not None else 0
    return steps * attack + train + teacher


def teacher_overhead(args, device, x, y) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = [save_model(f"{tmp}/t{j}", build_model(a, num_classes=10, data_cfg=CFG), dataset="synthetic")
                 for j, a in enumerate(args.teachers)]
        teachers = TeacherSet(paths, dataset="synthetic", num_classes=10, device=device)
    attack = {"steps": args.steps, "step_size": 2 / 255, "eps": 8 / 255}
    setups = {
        "PGD-AT step": ("pgd_at", {"name": "pgd_at", "attack": {"random_start": "normal", **attack}}, None),
        f"DARHT step ({len(args.teachers)} teachers)": (
            "darht", {"name": "darht", "attack": {"preset": "ce_pgd", **attack}, "adv_prob": 1.0, "mc_samples": 1,
                      "dropout": 0.0}, teachers)}
    rows, flops = [], {}
    for label, (name, raw, tset) in setups.items():
        mcfg = method_config(raw)
        mdef = mcfg.definition
        torch.manual_seed(0)
        arch, kwargs = (mdef.student(args.student, {}, mcfg, len(args.teachers)) if mdef.student else (args.student, {}))
        model = build_model(arch, num_classes=10, data_cfg=CFG, **kwargs).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        method = mdef.build(mcfg, MethodContext(student=model, forward=model, eps=8 / 255, num_classes=10, teachers=tset))
        flops[label] = predicted_flops(model, tset, x, y, args.steps)
        sec = median_seconds(lambda: method_step(method, model, opt, x, y), device, args.repeats, warmup=1)
        rows.append((label, sec, f"{flops[label] / 1e9:.1f} GFLOP"))
    base, darht = rows[0][0], rows[1][0]
    print_table(f"DARHT vs PGD-AT, student {args.student}, teachers {args.teachers}, PGD-{args.steps}, batch {len(x)}, "
                f"{device_name(device)}", rows, base)
    print(f"time ratio DARHT / PGD-AT: measured {rows[1][1] / rows[0][1]:.3f}, FLOP-predicted "
          f"{flops[darht] / flops[base]:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default="resnet18")
    p.add_argument("--teachers", nargs="+", default=["resnet18", "vit_tiny"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="attack steps of both training steps")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    x, y = torch.rand(args.batch, 3, 32, 32, device=device), torch.randint(0, 10, (args.batch,), device=device)
    mc_scaling(args, device, x, y)
    teacher_overhead(args, device, x, y)


if __name__ == "__main__":
    main()
