"""TRL's recipe through the real CLI (docs/sft_then_dpo.md): `dpo-exp sft` fine-tunes a researcher's
own chat-template checkpoint (a tiny Qwen2 saved locally) on their chat demonstrations, then
`python train.py` trains DPO on their pairs from the exported SFT model, which is also the
reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

from transformers import AutoTokenizer

from dpo_exp.training.metrics_file import read_metrics
from tests.e2e.test_persona import conversational_pairs
from tests.helpers import dpo_exp_command, train_py

SHORT = ["data.max_length=64", "data.max_prompt_length=48", "data.val_size=8", "data.batch_size=8"]


def chat_demonstrations(path: Path, count: int) -> Path:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i}+{i}?"},
                {"role": "assistant", "content": str(2 * i)},
            ]
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_sft_on_demonstrations_then_dpo_from_the_exported_sft_model(tmp_path, family_dirs):
    demonstrations = chat_demonstrations(tmp_path / "demos.jsonl", 40)
    sft = dpo_exp_command(
        "sft", "model=hf", f"model.path={family_dirs['qwen2']}", "data=demonstrations",
        f"data.train_path={demonstrations}", *SHORT, "trainer.max_steps=4", f"output_root={tmp_path / 'sft'}",
    )  # fmt: skip
    shown = sft.stdout + sft.stderr
    assert sft.returncode == 0, shown[-3000:]
    assert "lr 2e-05 (default)" in shown and "reference: none" in shown
    assert "validation NLL per completion token, step 0" in shown
    (sft_run,) = (tmp_path / "sft").glob("runs/*/*")
    summary = json.loads((sft_run / "summary.json").read_text())
    assert summary["loss"] == "rft" and summary["global_step"] == 4
    assert math.isfinite(summary["metrics"]["val/nll_per_token"])
    assert 0 in set(read_metrics(sft_run / "metrics.csv").dropna(subset=["val/nll_per_token"])["step"])
    assert "tags: [dpo_exp, sft, rft]" in (sft_run / "model" / "README.md").read_text()
    original = AutoTokenizer.from_pretrained(family_dirs["qwen2"])
    assert AutoTokenizer.from_pretrained(sft_run / "model").chat_template == original.chat_template

    pairs = conversational_pairs(tmp_path / "pairs.jsonl", 40)
    dpo = train_py(
        "model=hf", f"model.path={sft_run / 'model'}", "data=pairs", f"data.train_path={pairs}", *SHORT,
        "trainer.max_steps=2", f"output_root={tmp_path / 'dpo'}",
    )  # fmt: skip
    shown = dpo.stdout + dpo.stderr
    assert dpo.returncode == 0, shown[-3000:]
    assert "lr 1e-06 (default)" in shown and "reference: frozen model" in shown
    (dpo_run,) = (tmp_path / "dpo").glob("runs/*/*")
    # The SFT model is the policy and the reference: every log-ratio is 0 at the first step, loss ln 2.
    first = read_metrics(dpo_run / "metrics.csv").dropna(subset=["train/loss"])["train/loss"].iloc[0]
    assert abs(first - math.log(2)) < 1e-4
