"""bench/gpu_check.py --dry-run: every check's command composes, validates and runs on CPU."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT

CPU_CHECKS = [
    "bf16-mixed, one device",
    "bf16-true, one device",
    "reference cache (`reference.cache=true`)",
    "packed rows (`speed.pack=true`)",
    "DDP, 2 processes, gloo",
    "FSDP2, 2 processes",
]
GPU_CHECKS = ["QLoRA (`model.quantization=4bit`)", "0.5B shape: dpo_exp", "0.5B shape: TRL DPOTrainer"]


def test_the_dry_run_runs_every_cpu_check_from_ln2_and_skips_the_gpu_ones(tmp_path: Path):
    output = tmp_path / "table.md"
    command = [sys.executable, "bench/gpu_check.py", "--dry-run", "--dir", str(tmp_path / "work")]
    result = subprocess.run(
        [*command, "--output", str(output)],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("| check | ran |") :].split("\n\n")[0].splitlines()
    assert table[0] == "| check | ran | tokens/s | peak memory | MFU | step-0 loss / at log-ratio 0 |"
    rows = {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in table[2:])}
    assert list(rows) == CPU_CHECKS + GPU_CHECKS
    for name in CPU_CHECKS:  # every run starts from its reference: DPO's loss there is ln 2
        ran, tokens_per_s, memory, mfu, step_zero = rows[name]
        assert ran == "yes", (name, ran)
        assert float(tokens_per_s.replace(",", "")) > 0 and memory.endswith(" GB") and mfu.endswith("%")
        loss, loss_at_zero = (float(value) for value in step_zero.split(" / "))
        assert math.isclose(loss, math.log(2), abs_tol=1e-3), (name, step_zero)
        assert math.isclose(loss_at_zero, math.log(2), abs_tol=1e-6), (name, step_zero)
    for name in GPU_CHECKS:
        assert rows[name][0] == "skipped: needs a CUDA GPU", (name, rows[name])
    # The device is named above the table, and the file holds the same table.
    assert result.stdout.splitlines()[0].startswith("CPU: ")
    assert "\n".join(table) in output.read_text()
    assert len(list((tmp_path / "work" / "logs").glob("*.log"))) == len(CPU_CHECKS)
