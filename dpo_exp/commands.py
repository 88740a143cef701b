"""The `dpo-exp` command: its subcommands, each a part of a run or a report.

`dpo-exp [train] [overrides]` trains as `python train.py` does (`dpo_exp.cli`); `dpo-exp sft
data=demonstrations [overrides]` fine-tunes a model on demonstrations (one training run);
`dpo-exp sft|sample [overrides]` on the built-in experiment's data builds its first stages only;
`dpo-exp data-report [overrides]` reports the data a run would train on; `dpo-exp evaluate
[run=<folder>] [overrides]` gives a policy's validation figures without training; `dpo-exp compare
<folder>` compares run folders; `dpo-exp --help` lists them.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dpo_exp.cli import check_launcher, errors_as_messages, main, train_job, validated
from dpo_exp.config import is_experiment
from dpo_exp.config.defaults import CONF_DIR
from dpo_exp.config.evaluation import run_arguments, run_evaluation, split_run_argument
from dpo_exp.config.offline import offline_when_local
from dpo_exp.console import quiet_libraries
from dpo_exp.data.demonstrations import DEMONSTRATIONS
from dpo_exp.data.module import prepare_data
from dpo_exp.data.report import format_report
from dpo_exp.experiment.stages import Task, sample_stage, sft_stage
from dpo_exp.losses import get_loss
from dpo_exp.models.loading import load_tokenizer
from dpo_exp.training.run_files import discard_unused_folder


def trains_nothing(command: Callable[[DictConfig], None]) -> Callable[[DictConfig], None]:
    """A command that writes no run folder: the one Hydra made for it is removed when it ends."""

    @functools.wraps(command)
    def wrapper(cfg: DictConfig) -> None:
        quiet_libraries()
        try:
            command(cfg)
        finally:
            discard_unused_folder(Path(HydraConfig.get().runtime.output_dir), Path(cfg.output_root))

    return wrapper


def require_experiment(cfg: DictConfig, command: str) -> None:
    if not is_experiment(cfg):
        own = "; SFT on your own demonstrations is data=demonstrations" if command == "sft" else ""
        raise SystemExit(
            f"dpo-exp {command}: data={cfg.data.name} is a fixed dataset; it has no {command} stage{own}"
        )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def sft_main(cfg: DictConfig) -> float | None:
    """On demonstrations (data=demonstrations), a training run that fine-tunes the named model on
    them, with its run folder and exported model; else the built-in experiment's SFT checkpoint."""
    if cfg.data.source == DEMONSTRATIONS:
        return train_job(cfg)
    experiment_sft(cfg)
    return None


@trains_nothing
def experiment_sft(cfg: DictConfig) -> None:
    """The experiment's SFT checkpoint only, built or found in the cache (its line names it)."""
    with errors_as_messages():
        require_experiment(validated(cfg), "sft")
        with offline_when_local(cfg):
            sft_stage(cfg, Task.from_config(cfg.task))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
@trains_nothing
def sample_main(cfg: DictConfig) -> None:
    """The experiment's SFT checkpoint and its labelled samples only, built or found in the cache."""
    with errors_as_messages():
        require_experiment(validated(cfg), "sample")
        task = Task.from_config(cfg.task)
        with offline_when_local(cfg):
            sample_stage(cfg, task, sft_stage(cfg, task))


def data_report(cfg: DictConfig) -> str:
    """The report of both splits as the training run would prepare them; loads no model."""
    spec = get_loss(cfg.loss.name)
    if is_experiment(cfg):
        raise SystemExit(
            f"dpo-exp data-report: data={cfg.data.name} is sampled by the built-in experiment; "
            "`dpo-exp sample` builds it and prints its counts"
        )
    data = prepare_data(cfg.data, load_tokenizer(cfg.model), paired=spec.paired)
    return "\n".join(
        [
            format_report(data.train.report, f"train data ({cfg.data.name})"),
            format_report(data.validation.report, f"validation data ({cfg.data.name})"),
            *data.notes,
            *(f"warning: {warning}" for warning in data.warnings),
        ]
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
@trains_nothing
def data_report_main(cfg: DictConfig) -> None:
    with errors_as_messages(), offline_when_local(cfg):
        print(data_report(validated(cfg)))


def evaluate_main() -> None:
    """`dpo-exp evaluate [run=<run folder or checkpoint>] [overrides]`: Hydra composes the command
    line on the run's own groups (`run_arguments`); `run_evaluation` does the rest."""
    with errors_as_messages():
        run, given = split_run_argument(sys.argv[1:])
        arguments = given if run is None else run_arguments(run, given)
    sys.argv = [sys.argv[0], *arguments]

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
    @trains_nothing
    def evaluate_command(cfg: DictConfig) -> None:
        with errors_as_messages():
            print(run_evaluation(cfg, list(HydraConfig.get().overrides.task), run, given))

    evaluate_command()


def compare_main() -> None:
    from dpo_exp.report import compare

    compare.main(sys.argv[1:])


# The subcommands, what each does in one line, and its entry (run with the subcommand's own
# arguments in sys.argv[1:]). `train` is also what `dpo-exp [overrides]` runs.
COMMANDS: dict[str, tuple[str, Callable[[], None]]] = {
    "train": ("train one run on a dataset, the built-in experiment, or a sweep with -m (the default)", main),
    "sft": (
        "SFT on your demonstrations (data=demonstrations data.train_path=<file>), a run; "
        "else the experiment's SFT checkpoint",
        sft_main,
    ),
    "sample": ("the experiment's SFT checkpoint and its labelled samples only", sample_main),
    "data-report": ("what a run would train on, both splits, counted; loads no model", data_report_main),
    "evaluate": (
        "a run's or a model's validation figures on a preference set, no training (docs/evaluate.md)",
        evaluate_main,
    ),
    "compare": (
        "tables, plots and an HTML report of the runs under a folder: compare <folder>",
        compare_main,
    ),
}


def usage() -> str:
    """`dpo-exp --help`: the subcommands, one line each (Hydra's help is each command's own)."""
    width = max(map(len, COMMANDS))
    lines = [
        "usage: dpo-exp [train] [key=value ...]       train (settings: docs/configuration.md)",
        "       dpo-exp <command> [arguments ...]",
        "",
        "commands:",
        *(f"  {name:<{width}}  {about}" for name, (about, _) in COMMANDS.items()),
        "",
        "dpo-exp <command> --help shows a command's own help (for train and the stages: its settings,",
        "as Hydra composes them). Settings are key=value: optim.lr=5e-7 beta=0.1 loss=ipo data=pairs.",
    ]
    return "\n".join(lines)


def console_main() -> None:
    """`dpo-exp [train] [overrides]` trains like train.py; `dpo-exp sft|sample|data-report
    [overrides]` runs one part; `dpo-exp compare <folder>` compares the runs under a folder;
    `dpo-exp --help` lists these."""
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command in ("-h", "--help"):
        print(usage())
    elif command in COMMANDS:
        check_launcher()
        sys.argv.pop(1)
        COMMANDS[command][1]()
    else:
        main()
