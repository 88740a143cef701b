"""compare on hand-written run folders: varying columns, best values, seed spread, the frontier."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dpo_exp.report.compare import build_table, compare, read_runs, read_wandb_runs, varying_params


def write_run(root: Path, name: str, *, loss: str, beta: float, seed: int, val_losses: list[float], **final):
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"loss": {"name": loss}, "beta": beta, "seed": seed, "optim": {"lr": 5e-4}, "run_name": name}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    steps = list(range(len(val_losses)))
    pd.DataFrame({"step": steps, "val/loss": val_losses}).to_csv(run_dir / "metrics.csv", index=False)
    metrics = {"val/loss": val_losses[-1], **final}
    summary = {"metrics": metrics, "wall_time_s": 10.0, "tokens_per_s": 100.0}
    (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    for seed, reward in ((0, 0.6), (1, 0.8)):
        write_run(tmp_path, f"dpo_s{seed}", loss="dpo", beta=0.1, seed=seed, val_losses=[0.69, 0.5, 0.55],
                  **{"eval/true_reward": reward, "eval/kl": 2.0})  # fmt: skip
    write_run(tmp_path, "ipo_s0", loss="ipo", beta=0.5, seed=0, val_losses=[25.0, 20.0],
              **{"eval/true_reward": 0.7, "eval/kl": 1.0})  # fmt: skip
    failed = tmp_path / "dpo_bad"
    failed.mkdir()
    (failed / "failed.txt").write_text("ConfigError: beta must be a finite number > 0, got -1\n")
    return tmp_path


def test_the_table_has_a_row_per_run_and_the_varying_hyperparameters(runs_root: Path):
    runs = read_runs(runs_root)
    assert varying_params(runs) == ["loss.name", "beta", "seed"]  # optim.lr and run_name do not count
    table = build_table(runs, runs_root).set_index("run")
    assert table.loc["dpo_s0", "best val/loss"] == 0.5  # the minimum over evaluations, not the last
    assert table.loc["dpo_s0", "val/loss"] == 0.55
    assert table.loc["dpo_bad", "status"] == "failed" and "beta must be" in table.loc["dpo_bad", "error"]
    assert table.loc["ipo_s0", "eval/true_reward"] == 0.7


def test_compare_writes_every_plot_when_runs_carry_true_reward_and_kl(runs_root: Path):
    compare(runs_root)
    out = runs_root / "compare"
    for name in ("runs.csv", "runs.md", "metrics_vs_step.png", "final_vs_beta.png", "frontier.png"):
        assert (out / name).stat().st_size > 0, name
    markdown = (out / "runs.md").read_text().splitlines()
    assert len(markdown) == 2 + 4  # header, rule, one line per run


def test_runs_read_from_the_wandb_api_fill_the_same_table(tmp_path: Path, monkeypatch):
    """A stand-in for wandb.Api: the API itself needs a network and a login."""

    class FakeRun:
        def __init__(self, name, loss, beta, state):
            self.name, self.state = name, state
            self.config = {"loss.name": loss, "beta": beta, "run_name": name}
            self.summary = {"val/loss": 0.4, "_runtime": 12.0, "_step": 3}

        def history(self, pandas=True):
            return pd.DataFrame({"_step": [1, 3], "val/loss": [0.6, 0.4]})

    class FakeApi:
        def runs(self, path, filters):
            assert (path, filters) == ("me/dpo_exp", {"group": "20260101-000000"})
            return [FakeRun("a", "dpo", 0.1, "finished"), FakeRun("b", "ipo", 0.1, "crashed")]

    import wandb

    monkeypatch.setattr(wandb, "Api", FakeApi)
    runs = read_wandb_runs("me/dpo_exp", "20260101-000000")
    table = compare(tmp_path, runs=runs).set_index("run")
    assert list(table.index) == ["a", "b"] and list(table["loss.name"]) == ["dpo", "ipo"]
    assert list(table["status"]) == ["finished", "failed"]
    assert table.loc["a", "best val/loss"] == 0.4 and table.loc["a", "wall_time_s"] == 12.0
    assert (tmp_path / "compare" / "metrics_vs_step.png").exists()


def test_an_online_runs_earlier_rounds_are_part_of_it_not_runs_of_their_own(tmp_path: Path):
    write_run(tmp_path, "online", loss="dpo", beta=2.0, seed=0, val_losses=[0.69, 0.4])
    write_run(tmp_path / "online" / "rounds", "1", loss="dpo", beta=2.0, seed=0, val_losses=[0.69, 0.5])
    assert [run.path.name for run in read_runs(tmp_path)] == ["online"]
