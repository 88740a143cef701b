"""`dpo-exp evaluate` through the real CLI: a run trained by `train.py`, then its final policy
evaluated on its validation set (the run's last `val/*` figures, a JSON record, no Hydra folder
left behind), and a bare model without a reference refused in one line."""

from __future__ import annotations

import json
import math

import pytest

from dpo_exp.training.metrics_file import read_metrics
from tests.helpers import FAST_MODEL, dpo_exp_command, train_py


def test_evaluate_reproduces_a_runs_last_validation_and_refuses_a_missing_reference(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(40)]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = ["data=pairs", f"data.train_path={pairs}", "data.val_size=10", "data.batch_size=6"]
    trained = train_py(*FAST_MODEL, *data, "trainer.max_steps=3", f"output_root={tmp_path}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run_dir,) = tmp_path.glob("runs/*/*")

    result = dpo_exp_command("evaluate", f"run={run_dir}", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "── evaluation" in result.stdout and "validation loss (dpo)" in result.stdout
    (written,) = (run_dir / "evaluations").glob("*.json")
    assert f"written: {written}" in result.stdout
    record = json.loads(written.read_text())
    logged = read_metrics(run_dir / "metrics.csv").dropna(subset=["val/loss"]).iloc[-1]
    for name, value in record["metrics"].items():
        assert value == pytest.approx(float(logged[name]), abs=1e-5), name
    assert {name for name in logged.index if name.startswith("val/") and not math.isnan(logged[name])} == set(
        record["metrics"]
    )
    assert list(tmp_path.glob("runs/*/*")) == [run_dir]  # the command left no run folder of its own

    refused = dpo_exp_command("evaluate", "model=hf", f"model.path={run_dir / 'model'}", "data=pairs",
                              f"data.validation_path={pairs}", f"output_root={tmp_path}")  # fmt: skip
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith("model.ref_path: loss=dpo compares the policy")
    assert "Traceback" not in refused.stderr
    assert list(tmp_path.glob("runs/*/*")) == [run_dir] and not (tmp_path / "evaluations").exists()
