"""A table of samples at one evaluation: `<run>/samples/step_<step>.jsonl` and W&B's `eval/samples`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger


def write_sample_table(trainer: L.Trainer, run_dir: Path | None, rows: list[dict[str, Any]]) -> None:
    """One JSON line per row in the run folder (when there is one), and a W&B table where W&B logs."""
    if not rows:
        return
    if run_dir is not None:
        folder = run_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(row) + "\n" for row in rows)
        (folder / f"step_{trainer.global_step:06d}.jsonl").write_text(lines)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            columns = list(rows[0])
            data = [[row[column] for column in columns] for row in rows]
            logger.log_table(key="eval/samples", columns=columns, data=data, step=trainer.global_step)
