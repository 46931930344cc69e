"""Sanity checks of every evaluated checkpoint, as tasks on the evaluation actor pool next to the
suite's: one per checkpoint, and one per teacher of an evaluated student that is not evaluated
itself (for its robustness curve). Each writes a row of kind "sanity" keyed by the weights'
hash, the check parameters and the seed, so a re-run reuses it; a "sanity_plan" row per
evaluation names the rows it reports. Once the suite's rows are stored, a "confirm" task per
checkpoint re-attacks the points only Square broke with stronger white-box attacks (a row of
kind "sanity_confirm", named by the evaluation's "confirm_plan" row). Verdicts are assembled at
read time, with the checks that read the suite's stored masks (orchestrator.sanity_report).
"""
from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from attacks import AttackSpec
from attacks.autoattack import VERSION as AUTOATTACK_VERSION, library_warnings
from attacks.sanity import SanityParams, confirm_correct, run_model_checks, subsample, transfer_correct
from attacks.sanity_suite import attack_kind, square_only
from orchestrator.eval_pool import Cache, EvalTask, split_id
from orchestrator.results import ResultsStore, pack_mask, unpack_mask
from orchestrator.storage import localize
from orchestrator.summary import read_masks
from orchestrator.teacher_registry import TeacherRegistry
from trainers.checkpoint import CheckpointError, checkpoint_dir, read_document
from trainers.config import ConfigError
from trainers.data import as_float
from trainers.modes import eval_mode

DEFAULT_WEAK = AttackSpec("pgd", {"steps": 10}, "PGD-10")


@dataclass(frozen=True)
class SanityTask:
    checkpoint: str
    checkpoint_id: str
    run: str
    data: dict[str, Any]
    split: str
    eps: float
    weak: AttackSpec
    """The suite's PGD (the short attack of the steps check)."""
    eot: bool
    """The suite attacks with EOT (AutoAttack `rand`): a randomized model is then evaluated correctly."""
    teachers: tuple[tuple[str, str, str], ...]
    """(label, checkpoint path, weights' SHA-256) of each surrogate of the transfer check."""
    params: SanityParams
    seed: int
    batch_size: int = field(compare=False)

    @property
    def start(self) -> int:
        """The pool orders tasks by (checkpoint, start): a checkpoint's sanity task, its longest, goes first."""
        return -1

    @property
    def key(self) -> str:
        identity = json.dumps({"eps": self.eps, "weak": self.weak.key, "eot": self.eot, "params": asdict(self.params),
                               "teachers": [t[2] for t in self.teachers]}, sort_keys=True)
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        return f"sanity/{self.checkpoint_id[:16]}/{split_id(self.data, self.split)}/{digest}/seed{self.seed}"

    def run_on(self, cache: Cache) -> dict[str, Any]:
        """The model checks and the transfer masks on the seeded subsample, and the protocol facts."""
        start = time.perf_counter()
        dataset = cache.dataset(self.data)
        split = dataset.split(self.split)
        idx = subsample(len(split.y), self.params.points, self.seed)
        x, y = as_float(split.x[idx]).to(cache.device), split.y[idx].to(cache.device)
        model = cache.model(self.checkpoint)
        transfer = {}
        with eval_mode(model):
            flags, whitebox = run_model_checks(model, x, y, eps=self.eps, weak=self.weak, params=self.params,
                                               eot=self.eot, seed=self.seed, batch_size=self.batch_size)
            spec = AttackSpec("pgd", {"eps": self.eps, "steps": self.params.transfer_steps})
            for label, path, _ in self.teachers:
                teacher = cache.model(path)
                with eval_mode(teacher):
                    transfer[label] = _b64(transfer_correct(teacher, model, x, y, spec, seed=self.seed,
                                                            batch_size=self.batch_size))
        sidecar = read_document(checkpoint_dir(localize(self.checkpoint)), "model")
        facts = {"dataset": dataset.info.name, "dataset_eps": dataset.info.eps, "eps": self.eps, "split": self.split,
                 "split_size": len(split.y), "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                 "autocast": torch.is_autocast_enabled(), "autoattack_installed": AUTOATTACK_VERSION,
                 "train_batch": sidecar.get("batch"), "selection": selection_rule(self.checkpoint, sidecar),
                 "threat_eps": sidecar.get("threat_eps"), "eval_batch_size": self.batch_size}
        return {"key": self.key, "flags": [f.to_dict() for f in flags], "indices": idx.tolist(),
                "whitebox": _b64(whitebox), "transfer": transfer, "facts": facts,
                "seconds": time.perf_counter() - start}


@dataclass(frozen=True)
class ConfirmTask:
    """Re-attack the points Square broke and no gradient attack of the suite did, with the stronger
    white-box attacks of `params.confirm`: the black-box check counts only the survivors."""

    checkpoint: str
    checkpoint_id: str
    run: str
    data: dict[str, Any]
    split: str
    eps: float
    square_only: int
    """How many points only Square broke; `indices` are all of them or a seeded sample."""
    indices: tuple[int, ...]
    params: SanityParams
    seed: int
    batch_size: int = field(compare=False)

    @property
    def start(self) -> int:
        """The pool orders tasks by (checkpoint, start)."""
        return -1

    @property
    def key(self) -> str:
        identity = json.dumps({"eps": self.eps, "attacks": [s.key for s in self.params.confirm(self.eps)],
                               "indices": self.indices}, sort_keys=True)
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        return f"confirm/{self.checkpoint_id[:16]}/{split_id(self.data, self.split)}/{digest}/seed{self.seed}"

    def run_on(self, cache: Cache) -> dict[str, Any]:
        start = time.perf_counter()
        split = cache.dataset(self.data).split(self.split)
        idx = torch.tensor(self.indices, dtype=torch.long)
        x, y = as_float(split.x[idx]).to(cache.device), split.y[idx].to(cache.device)
        model = cache.model(self.checkpoint)
        with eval_mode(model), library_warnings():  # APGD-T's messages are the suite's business, not this check's
            survived, broken = confirm_correct(model, x, y, eps=self.eps, params=self.params, seed=self.seed,
                                               batch_size=self.batch_size)
        return {"key": self.key, "survived": pack_mask(survived), "metrics": {
            "square_only": self.square_only, "reattacked": len(idx), "survived": int(survived.sum()),
            "broken_by": broken, "attacks": [s.display for s in self.params.confirm(self.eps)],
            "indices": list(self.indices), "seconds": time.perf_counter() - start}}


def plan_confirmations(tasks: list[EvalTask], store: ResultsStore, *, sweep: str,
                       params: SanityParams) -> list[ConfirmTask]:
    """After the suite's rows of evaluation `sweep` are stored: per checkpoint, the points only
    Square broke (attacks.sanity_suite.square_only); record which confirmation row the evaluation
    reports in its "confirm_plan" row and return the tasks whose rows are missing."""

    masks = read_masks(store, sweep)
    runs: dict[str, list[EvalTask]] = {}
    for t in tasks:
        runs.setdefault(t.run, []).append(t)
    planned: dict[str, ConfirmTask] = {}
    for run, mine in runs.items():
        kinds = {t.spec.display: attack_kind({"name": t.spec.name, **t.spec.params}) for t in mine}
        only = square_only({a: masks[run][a] for a in kinds}, kinds)
        if only is not None and len(only):
            t = mine[0]
            pick = only[subsample(len(only), params.confirm_points, t.seed)]
            planned[run] = ConfirmTask(t.checkpoint, t.checkpoint_id, run, t.data, t.split, t.eps, len(only),
                                       tuple(pick.tolist()), params, t.seed, t.batch_size)
    store.append([{"key": f"confirm_plan/{sweep}", "kind": "confirm_plan", "sweep": sweep,
                   "metrics": {"entries": {run: task.key for run, task in planned.items()}}}])
    done = store.keys(kind="sanity_confirm")
    return [task for task in planned.values() if task.key not in done]


def sanity_params(points: int, field_name: str = "sanity_points") -> SanityParams | None:
    """The default checks on a `points`-point subsample; None (checks off) for 0."""
    if points < 0:
        raise ConfigError(field_name, f"must be >= 0 (0 turns the sanity checks off), got {points}")
    return SanityParams(points=points) if points else None


def selection_rule(path: str, sidecar: dict[str, Any]) -> str | None:
    """How the checkpoint was chosen: the last epoch, or the best epoch on the validation metric
    the training loop records (None when the sidecar does not say)."""
    if Path(path.rstrip("/")).name == "last":
        return "last epoch"
    metric, record = sidecar.get("selection"), sidecar.get("metrics") or {}
    if metric and record.get("is_best"):
        return f"best {metric} on the validation split (epoch {int(record.get('epoch', -1)) + 1})"
    return None


def _b64(mask: torch.Tensor) -> str:
    return base64.b64encode(pack_mask(mask)).decode()


def decode_mask(text: str, n: int) -> torch.Tensor:
    return unpack_mask(base64.b64decode(text), n)


def plan_sanity(tasks: list[EvalTask], store: ResultsStore, *, sweep: str, params: SanityParams) -> list[SanityTask]:
    """Record which sanity rows evaluation `sweep` reports; return the tasks whose rows are missing."""
    targets: dict[tuple[str, str], list[EvalTask]] = {}
    for t in tasks:
        targets.setdefault((t.checkpoint_id, t.run), []).append(t)
    evaluated = {cid: run for cid, run in targets}
    names = {r["metrics"]["path"]: r["run"] for r in TeacherRegistry(store.storage).rows()}
    checks: dict[str, tuple[SanityTask, dict[str, Any]]] = {}
    for (cid, run), mine in targets.items():
        first, specs = mine[0], [t.spec for t in mine]
        weak = next((s for s in specs if s.name == "pgd" and s.params.get("loss", "ce") == "ce" and s.eps == first.eps),
                    DEFAULT_WEAK)  # the suite's CE PGD at the threat model's eps
        eot = any(s.name == "autoattack" and s.params.get("version") == "rand" for s in specs)
        teachers, missing = _teachers(first.checkpoint, evaluated, names)
        common = dict(data=first.data, split=first.split, eps=first.eps, weak=weak, eot=eot, params=params,
                      seed=first.seed, batch_size=first.batch_size)
        task = SanityTask(first.checkpoint, cid, run, teachers=tuple(teachers), **common)
        checks[task.key + run] = (task, {"run": run, "key": task.key, "role": "model",
                                         "teachers": [t[0] for t in teachers], "missing_teachers": missing})
        for label, path, tid in teachers:
            if tid not in evaluated:
                t_task = SanityTask(path, tid, label, teachers=(), **common)
                checks.setdefault(t_task.key + label, (t_task, {"run": label, "key": t_task.key, "role": "teacher",
                                                                "teachers": [], "missing_teachers": []}))
    store.append([{"key": f"sanity_plan/{sweep}", "kind": "sanity_plan", "sweep": sweep,
                   "metrics": {"entries": [entry for _, entry in checks.values()]}}])
    done = store.keys(kind="sanity")
    return [task for task, _ in checks.values() if task.key not in done]


def _teachers(checkpoint: str, evaluated: dict[str, str],
              names: dict[str, str]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The surrogates recorded in a student's sidecar: (label, path, weights' hash), and the paths not found."""
    sidecar = read_document(checkpoint_dir(localize(checkpoint)), "model")
    found, missing = [], []
    for path in sidecar.get("teachers") or []:
        try:
            tid = read_document(checkpoint_dir(localize(path)), "model")["weights_sha256"]
        except (CheckpointError, KeyError, OSError):
            missing.append(path)
            continue
        label = evaluated.get(tid) or f"teacher:{names.get(path) or '/'.join(Path(path).parts[-2:])}"
        found.append((label, path, tid))
    return found, missing


def sanity_row(task: SanityTask | ConfirmTask, res: dict[str, Any], sweep: str) -> dict[str, Any]:
    if isinstance(task, ConfirmTask):  # the survivors as the row's mask, both counts in its metrics
        m = res["metrics"]
        return {"key": task.key, "kind": "sanity_confirm", "sweep": sweep, "run": task.run, "split": task.split,
                "n": m["reattacked"], "correct": m["survived"], "mask": res["survived"],
                "metrics": {**m, "checkpoint": task.checkpoint, "checkpoint_id": task.checkpoint_id, "seed": task.seed}}
    metrics = {k: res[k] for k in ("flags", "indices", "whitebox", "transfer", "facts", "seconds")}
    return {"key": task.key, "kind": "sanity", "sweep": sweep, "run": task.run, "split": task.split,
            "n": len(res["indices"]), "metrics": {**metrics, "checkpoint": task.checkpoint,
                                                  "checkpoint_id": task.checkpoint_id, "seed": task.seed,
                                                  "params": asdict(task.params), "weak": task.weak.key}}


def sanity_line(task: SanityTask | ConfirmTask, res: dict[str, Any]) -> str:
    """One console line per checkpoint's model checks (the flags that are not ok) and per confirmation."""
    if isinstance(task, ConfirmTask):
        m = res["metrics"]
        return (f"sanity checks {task.run}: {m['survived']} of {m['reattacked']} points only Square broke survive "
                f"{' and '.join(m['attacks'])} ({m['seconds']:.1f} s)")
    worst = [f for f in res["flags"] if f["status"] in ("warn", "fail")]
    found = ", ".join(f"{f['check']} {f['status']}" for f in worst) or "model checks ok"
    return f"sanity checks {task.run}: {found} ({res['seconds']:.1f} s)"
