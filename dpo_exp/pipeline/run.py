"""The whole built-in experiment in one call: SFT -> sample and label -> train -> evaluate.

`python train.py` runs it (the default config); `~task` turns it off for a single
preference run on `data`. `python -m dpo_exp.pipeline.sample [overrides]` runs stages 1-2 only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dpo_exp.cli import CONF_DIR
from dpo_exp.pipeline.sample import STATS
from dpo_exp.pipeline.stages import EVAL_KEYS, PipelineContext
from dpo_exp.run_files import write_failure


def run_pipeline(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Build or reuse stages 1-2, train into `run_dir`, and return the summary (with the SFT figures)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        context = PipelineContext(cfg, run_dir)
        sft = context.sft()
        sample = context.sample(sft)
        reference = context.reference_eval(sft)
        extra = {
            "method": cfg.method,
            "reference": {f"eval/{key}": reference[key] for key in EVAL_KEYS},
            "stages": {
                "sft": {"path": str(sft.path), "reused": sft.reused},
                "sample": {"path": str(sample.path), "reused": sample.reused},
            },
            "sample_stats": json.loads((sample.path / STATS).read_text()),
        }
        summary = context.train(sft, sample, extra)
    except BaseException as error:
        write_failure(run_dir, error)
        raise
    print(pipeline_headline(summary, time.perf_counter() - start))
    return summary


def pipeline_headline(summary: dict[str, Any], seconds: float) -> str:
    metrics, reference = summary["metrics"], summary["reference"]
    figures = [
        f"{key.removeprefix('eval/')} {metrics.get(key, float('nan')):.3f} (SFT {reference[key]:.3f})"
        for key in (f"eval/{k}" for k in EVAL_KEYS)
    ]
    return f"run folder: {summary['run_dir']} | " + " | ".join(figures) + f" | {seconds:.0f} s"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def sample_main(cfg: DictConfig) -> None:
    """Stages 1-2 only: the SFT checkpoint and its labelled samples, built or found in the cache."""
    context = PipelineContext(cfg, Path(HydraConfig.get().runtime.output_dir))
    sample = context.sample(context.sft())
    print(f"samples: {sample.path}")
