"""`dpo-exp compare` as a user types it: its arguments, `--rescore-*`, and the files it writes, on
real run folders of a paired (dpo), an unpaired (kto), an unpaired reference-free (rft) and a
paired reference-free (orpo) loss, each trained with `save_eval_logps=true`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch.nn.functional as F

from dpo_exp.cli import run
from dpo_exp.training.eval_logps import load_eval_logps
from tests.helpers import compose_config, dpo_exp_command

# β (λ for orpo) of each run; rft has none.
RUNS = {"dpo": ["beta=0.3"], "kto": ["beta=0.3"], "rft": [], "orpo": ["beta=0.3"]}


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory) -> Path:
    """A run per loss: 2 steps, one evaluation at step 2 whose log-probs are saved."""
    folder = tmp_path_factory.mktemp("runs")
    for loss, options in RUNS.items():
        overrides = [f"loss={loss}", *options, "save_eval_logps=true", "trainer.max_steps=2"]
        run(compose_config(overrides), folder / loss)
    return folder


def logged_val_loss(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["metrics"]["val/loss"]


@pytest.mark.slow
def test_compare_writes_its_tables_and_report_into_the_folder_and_no_rescoring_unasked(runs_folder: Path):
    result = dpo_exp_command("compare", str(runs_folder))
    assert result.returncode == 0, result.stderr[-3000:]
    out = runs_folder / "compare"
    for name in ("runs.csv", "runs.md", "report.html", "group1_metrics_vs_step.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "rescored.csv").exists()
    table = pd.read_csv(out / "runs.csv")
    assert sorted(table["run"]) == ["dpo", "kto", "orpo", "rft"] and set(table["status"]) == {"finished"}
    assert f"compare: wrote {out}/report.html" in result.stdout


@pytest.mark.slow
def test_rescoring_lists_runs_it_cannot_rescore_with_the_reason(runs_folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    arguments = ["--rescore-beta", "0.3,1", "--rescore-loss", "dpo,orpo", "--out", str(out)]
    result = dpo_exp_command("compare", str(runs_folder), *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("runs.csv", "report.html", "rescored.csv", "rescored.md"):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "rescored.csv")
    # Paired runs: a row per loss and β; unpaired ones, and dpo on orpo's run, a row with the reason.
    scored = table.dropna(subset=["rescored β"]).set_index(["run", "rescored loss", "rescored β"])
    assert sorted(scored.index) == [
        ("dpo", "dpo", 0.3), ("dpo", "dpo", 1.0), ("dpo", "orpo", 0.3), ("dpo", "orpo", 1.0),
        ("orpo", "orpo", 0.3), ("orpo", "orpo", 1.0),
    ]  # fmt: skip
    assert scored["not re-scorable"].isna().all()
    refused = table[table["rescored β"].isna()]
    assert refused["val/loss"].isna().all()
    reasons = refused.set_index(["run", "rescored loss"])["not re-scorable"]
    assert sorted(reasons.index) == [("kto", "dpo"), ("kto", "orpo"), ("orpo", "dpo"), ("rft", "dpo"),
                                     ("rft", "orpo")]  # fmt: skip
    assert (
        reasons[("kto", "dpo")] == "the run trained on unpaired examples: its saved log-probs hold no pairs"
    )
    assert reasons[("rft", "orpo")] == reasons[("kto", "dpo")]
    no_reference = "dpo needs reference log-probs; the run trained without a reference and saved none"
    assert reasons[("orpo", "dpo")] == no_reference
    assert no_reference in result.stdout and no_reference in (out / "rescored.md").read_text()

    # At a run's own loss and β, re-scoring reproduces the val/loss the run logged.
    for name in ("dpo", "orpo"):
        rescored = scored.loc[(name, name, 0.3), "val/loss"]
        assert rescored == pytest.approx(logged_val_loss(runs_folder / name), rel=1e-5)
    # At β = 1, DPO by hand on the saved log-probs: h = Δpolicy − Δref; loss −log σ(h), margin h.
    saved = {name: value.double() for name, value in load_eval_logps(runs_folder / "dpo").items()}
    h = (saved["policy_chosen_logps"] - saved["policy_rejected_logps"]) - (
        saved["ref_chosen_logps"] - saved["ref_rejected_logps"]
    )
    at_one = scored.loc[("dpo", "dpo", 1.0)]
    assert at_one["val/loss"] == pytest.approx(float(-F.logsigmoid(h).mean()), rel=1e-9)
    assert at_one["val/rewards/margin"] == pytest.approx(float(h.mean()), rel=1e-9)
    assert at_one["val/rewards/accuracy"] == float((h > 0).double().mean())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--rescore-beta", "0.1,big"], "β values are numbers, e.g. 0.05,0.1,0.5; got '0.1,big'"),
        (["--rescore-beta", "0.1,0"], "β must be a finite number > 0, got 0"),
        (["--rescore-beta", "0.1", "--rescore-loss", "dpo,dop"], "unknown loss 'dop'; valid losses:"),
        (["--rescore-loss", "ipo"], "--rescore-loss needs --rescore-beta"),
    ],
)
def test_bad_rescore_options_are_refused_before_anything_is_read(tmp_path: Path, arguments, message):
    result = dpo_exp_command("compare", str(tmp_path), *arguments)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "usage: dpo-exp compare" in result.stderr and message in result.stderr
    assert not (tmp_path / "compare").exists()


def test_a_folder_without_runs_is_one_line_not_a_traceback(tmp_path: Path):
    result = dpo_exp_command("compare", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    expected = f"dpo-exp compare: no run folders (with summary.json or failed.txt) under {tmp_path}"
    assert result.stderr.strip() == expected
