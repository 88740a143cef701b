"""bench/tune_table.py: sweep members grouped by their values, ranked by mean gain over seeds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tests.conftest import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("tune_table", PROJECT_ROOT / "bench" / "tune_table.py")
tune_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tune_table)


def write_member(sweep: Path, name: str, reward: float, sft: float, kl: float) -> None:
    folder = sweep / name
    folder.mkdir(parents=True)
    summary = {"metrics": {"eval/true_reward": reward, "eval/kl": kl}, "reference": {"eval/true_reward": sft}}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_members_differing_in_seed_are_one_setting_and_ties_go_to_the_better_worst_seed(tmp_path: Path):
    sweep = tmp_path / "sweeps" / "20260101-000000-1"
    write_member(sweep, "0_loss=dpo,beta=1,seed=0", 0.70, 0.50, 0.6)  # gains 0.20, 0.10: mean 0.15
    write_member(sweep, "1_loss=dpo,beta=1,seed=1", 0.60, 0.50, 0.8)
    write_member(sweep, "2_loss=dpo,beta=2,seed=0", 0.64, 0.50, 0.2)  # gains 0.14, 0.16: mean 0.15
    write_member(sweep, "3_loss=dpo,beta=2,seed=1", 0.66, 0.50, 0.4)
    write_member(sweep, "4_loss=dpo,beta=4,seed=0", 0.55, 0.50, 0.1)  # gain 0.05
    (sweep / "5_loss=dpo,beta=4,seed=1").mkdir()  # unfinished: no summary, left out
    grouped = tune_table.settings([sweep])
    assert sorted(grouped) == ["beta=1", "beta=2", "beta=4"]
    assert [m["seed"] for m in grouped["beta=1"]] == ["0", "1"]
    rows = tune_table.table(grouped).splitlines()[2:]
    assert rows[0].startswith("| beta=2 | +0.150 | +0.140 | 0: +0.140, 1: +0.160 | 0.30 |")
    assert rows[1].startswith("| beta=1 (≈ best) | +0.150 | +0.100 |")
    assert rows[2].startswith("| beta=4 | +0.050 | +0.050 |")  # 0.10 behind: not marked
