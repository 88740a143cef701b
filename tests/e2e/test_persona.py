"""A researcher's path end to end, through the real CLI: their own chat-template checkpoint (a tiny
Qwen2 saved locally) and their own conversational pairs. One epoch with its learning rate and
gradient norm logged; Ctrl-C, then `resume=auto` into the same folder, one curve; a 3-loss × 2-β ×
2-seed sweep, compared with seeds folded into mean ± sd."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dpo_exp.training.metrics_file import read_metrics
from tests.helpers import ctrl_c_after_first_checkpoint, dpo_exp_command, train_py


def conversational_pairs(path: Path, count: int) -> Path:
    rows = [
        {
            "prompt": [{"role": "user", "content": f"What is {i}+{i}?"}],
            "chosen": [{"role": "assistant", "content": str(2 * i)}],
            "rejected": [{"role": "assistant", "content": str(2 * i + 1)}],
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def own_model_and_data(tmp_path: Path, family_dirs: dict[str, Path]) -> list[str]:
    """48 pairs, 8 cut for validation, 8 a batch: 5 steps an epoch."""
    data = conversational_pairs(tmp_path / "pairs.jsonl", 48)
    model = ["model=hf", f"model.path={family_dirs['qwen2']}"]
    return [*model, "data=pairs", f"data.train_path={data}", "data.val_size=8", "data.batch_size=8",
            "data.max_length=64", "data.max_prompt_length=48"]  # fmt: skip


def test_one_epoch_logs_its_learning_rate_and_gradient_norm_from_step_0(tmp_path, family_dirs):
    result = train_py(
        *own_model_and_data(tmp_path, family_dirs), "trainer.max_epochs=1", f"output_root={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 epoch = 5 steps" in result.stdout + result.stderr
    (run_dir,) = tmp_path.glob("runs/*/*")
    metrics = read_metrics(run_dir / "metrics.csv")
    assert {"train/lr", "train/grad_norm", "train/clipped_fraction"} <= set(metrics.columns)
    assert metrics["train/lr"].dropna().gt(0).all() and metrics["train/grad_norm"].dropna().gt(0).all()
    assert 0 in set(metrics.dropna(subset=["val/loss"])["step"])  # validated before the first step
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 5


def test_ctrl_c_then_resume_auto_continues_in_the_same_folder_with_one_curve(tmp_path, family_dirs):
    every_5 = ["checkpoint.every_n_steps=5", "trainer.val_check_interval=5"]
    arguments = [*own_model_and_data(tmp_path, family_dirs), "trainer.max_epochs=40", *every_5,
                 f"output_root={tmp_path}"]  # fmt: skip
    stderr = ctrl_c_after_first_checkpoint(arguments, tmp_path)
    assert "is resumable: run the same command with resume=auto" in stderr
    resumed = train_py(*arguments, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (run_dir,) = tmp_path.glob("runs/*/*")  # one folder
    steps = read_metrics(run_dir / "metrics.csv").dropna(subset=["train/loss"])["step"].astype(int).tolist()
    assert steps == list(range(200))  # one curve: every step of the 40 epochs once


def test_a_loss_by_beta_by_seed_sweep_is_compared_with_seeds_folded(tmp_path, family_dirs):
    sweep = train_py(*own_model_and_data(tmp_path, family_dirs), "loss=dpo,ipo,simpo", "beta=0.1,0.5",
                     "seed=0,1", "trainer.max_steps=2", f"output_root={tmp_path}", multirun=True)  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    (sweep_dir,) = tmp_path.glob("sweeps/*")
    compared = dpo_exp_command("compare", str(sweep_dir))
    assert compared.returncode == 0, compared.stderr[-3000:]
    stats = pd.read_csv(sweep_dir / "compare" / "seeds.csv")
    assert len(stats) == 6 and set(stats["runs"]) == {2}  # 3 losses x 2 betas, 2 seeds each
    assert stats["val/loss sd"].notna().all()
    assert " ± " in (sweep_dir / "compare" / "runs.md").read_text()
