"""benchmarks.gpu, the prepared GPU run, works end to end at toy sizes on a CPU with Ray made
unimportable, and prints every section's figures as finite times and ratios."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `import ray` raises inside the child: the script and everything it imports must do without it.
RUN_WITHOUT_RAY = ("import runpy, sys; sys.modules['ray'] = None; "
                   "runpy.run_module('benchmarks.gpu', run_name='__main__', alter_sys=True)")
ROW = re.compile(r"^(.{40})\s*(\d+\.\d+)\s+(\S+)x  ", re.M)


def test_gpu_script_runs_at_tiny_sizes_on_cpu_without_ray() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", RUN_WITHOUT_RAY, "--tiny", "--device", "cpu"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    text = done.stdout
    assert "failed" not in text
    rows = {name.strip(): (float(sec), float(ratio)) for name, sec, ratio in ROW.findall(text)}
    want = {"fp32", "bf16 + channels_last", "PGD-AT step", "DARHT step, CE-PGD on all", "DARHT step, paper profile",
            "teachers' forwards alone",
            "PGD-2 (keep best)", "APGD-CE (5 iterations)", "PGD-2"}
    want |= {f"FAT tau={tau} {kind}" for tau in (0, 1, 2) for kind in ("compacted", "masked (before)")}
    assert want <= set(rows), sorted(set(rows))
    assert all(math.isfinite(sec) and sec > 0 and math.isfinite(ratio) and ratio > 0 for sec, ratio in rows.values())
    for baseline in ("fp32", "PGD-AT step", "PGD-2 (keep best)", "PGD-2"):
        assert rows[baseline][1] == 1.0
    # Legs that need a GPU say so instead of timing something else.
    assert re.search(r"^bf16 \+ channels_last \+ compile\s+skipped \(no GPU\)$", text, re.M)
    assert re.search(r"^bf16 \+ channels_last \+ cudnn\.benchmark\s+skipped \(no GPU\)$", text, re.M)
    assert re.search(r"^projected CIFAR-10 PGD-2 AT epoch: \d+\.\d s \(", text, re.M)
    assert re.search(r"^time ratio DARHT / PGD-AT: CE-PGD on all \d+\.\d{3}, paper profile \d+\.\d{3}; "
                     r"teachers' forwards / DARHT CE-PGD step: \d+\.\d{3}$", text, re.M)
    for tau in (0, 1, 2):
        assert re.search(rf"^FAT tau={tau}: speed-up of compacted over masked \d+\.\d\dx; time vs PGD-2: "
                         rf"compacted \d+\.\d\d, masked \d+\.\d\d; same points as masked: \d+% of examples$",
                         text, re.M)
    assert "peak memory n/a (CPU)" in text
