"""bench/iterative_table.py at a tiny size: every method's rounds, read back into one table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.helpers import SMALL_EXPERIMENT

pytestmark = pytest.mark.slow


def test_the_iterative_table_has_a_row_per_method_and_round(tmp_path: Path):
    command = [
        sys.executable,
        "bench/iterative_table.py",
        "--seeds",
        "0",
        "--steps",
        "2",
        "--output-root",
        str(tmp_path),
        *SMALL_EXPERIMENT,
        "online.rounds=2",
    ]
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("| method | round |") :].splitlines()
    assert table[0] == (
        "| method | round | true reward (sampled) | greedy | KL vs SFT | Δlogp chosen | Δlogp rejected |"
    )
    assert [row.split(" | ")[:2] for row in table[2:]] == [
        ["| sft", "0"],
        *[[f"| {method}", str(number)] for method in ("rpo", "dpo", "rft") for number in (1, 2)],
    ]
    assert all(" ± 0.000" in row and "nan" not in row for row in table[2:])  # one seed: no spread
    # Each method ran as one run of its experiment config, at --steps a round, on one SFT model.
    runs = sorted(path.parent.parent.name for path in tmp_path.glob("*/seed0-*/summary.json"))
    assert runs == ["iterative_dpo", "iterative_rpo", "online_rft"]
    for config in tmp_path.glob("*/seed0-*/rounds/1/config.yaml"):
        assert "max_steps: 2" in config.read_text()
    assert len([path for path in (tmp_path / "cache" / "sft").iterdir() if path.is_dir()]) == 1
