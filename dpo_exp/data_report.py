"""`python -m dpo_exp.data_report data=...`: rows read, rows dropped by reason, token lengths."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from dpo_exp.cli import CONF_DIR
from dpo_exp.config import validate_config
from dpo_exp.data.module import prepare_data
from dpo_exp.data.report import format_report
from dpo_exp.models import load_tokenizer


def report(cfg: DictConfig) -> str:
    """The report of both splits as the training run would prepare them; loads no model."""
    spec = validate_config(cfg)
    data = prepare_data(cfg.data, load_tokenizer(cfg.model), paired=spec.paired)
    return "\n".join(
        [
            format_report(data.train.report, f"train data ({cfg.data.name})"),
            format_report(data.validation.report, f"validation data ({cfg.data.name})"),
        ]
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    print(report(cfg))


if __name__ == "__main__":
    main()
