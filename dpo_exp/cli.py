"""The entry layer: parse the command line with Hydra, validate the config once, dispatch.

`python train.py [overrides]` (or `dpo-exp [overrides]`) trains: the built-in experiment when the
data is a task (`data=arithmetic`, the default; `data=gsm8k`), one training run on a fixed dataset
otherwise. The `dpo-exp` command's other subcommands are in `dpo_exp.commands`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, ListConfig, OmegaConf

from dpo_exp.config import is_experiment, validate_config
from dpo_exp.config.defaults import CONF_DIR, override_keys
from dpo_exp.config.folders import move_log_files, point_hydra_at
from dpo_exp.config.generation_eval import generation_eval_wanted
from dpo_exp.config.keys import refuse_unknown_overrides
from dpo_exp.config.offline import offline_when_local
from dpo_exp.config.validate import learning_rate_warning
from dpo_exp.console import is_main_process, quiet_libraries, result, warn
from dpo_exp.errors import UserError, storage_error
from dpo_exp.experiment.reward_eval import generation_eval
from dpo_exp.experiment.run import experiment_result, run_experiment
from dpo_exp.runtime import keep_freed_memory
from dpo_exp.training import train
from dpo_exp.training.checkpoints import checkpoints_of
from dpo_exp.training.result import run_result
from dpo_exp.training.resume import folder_to_continue, step_of
from dpo_exp.training.run_files import claim_run_dir, digest_of, discard_unused_folder, resolved
from dpo_exp.training.signals import stop_signal
from dpo_exp.world import agreed, cluster_environment, started_by_lightning


def config_hash_resolver(*, _root_: DictConfig) -> str:
    """`${config_hash:}` in Hydra's folder names: 8 hex digits of the resolved config (Hydra's own
    settings left out), the first digits of the summary's `config_hash`."""
    job = {}
    for key in _root_:
        if key != "hydra":
            node = _root_[key]
            job[key] = (
                OmegaConf.to_container(node, resolve=True)
                if isinstance(node, DictConfig | ListConfig)
                else node
            )
    return digest_of(job)[:8]


def launch_id_resolver() -> str:
    """`${launch_id:}` in a sweep folder's name: this launching process, unique among those running
    (cached, and handed to every member's config, as Hydra does with `${now:}`)."""
    return str(os.getpid())


refuse_unknown_overrides()
OmegaConf.register_new_resolver("config_hash", config_hash_resolver, replace=True)
OmegaConf.register_new_resolver("launch_id", launch_id_resolver, use_cache=True, replace=True)


class StoppedByUserError(CompactHydraException):
    """A sweep member's error the user caused: Hydra prints it after the member's overrides, and
    the sweep goes on to its other members."""


def user_message(error: BaseException, run_dir: Path | None) -> str | None:
    """The one-line message of an error the user caused and can fix, or None for a bug."""
    if isinstance(error, UserError):
        return str(error)
    storage = storage_error(error, run_dir)
    return None if storage is None else str(storage)


def stopped_status(received: signal.Signals) -> int:
    """The status of a process ended by `received`, as a shell reports it (128 + its number)."""
    return 128 + int(received)


def terminated_message(run_dir: Path | None, received: signal.Signals = signal.SIGTERM) -> str:
    """What to do after SIGTERM or SIGINT: the run's checkpoints and metrics are on disk, whole."""
    stopped = f"stopped by {received.name}"
    if run_dir is None:
        return f"{stopped}; run the same command again (finished stages are taken from the cache)"
    newest = checkpoints_of(run_dir)
    where = f"its checkpoint at step {step_of(newest[0])}" if newest else "its start (no checkpoint)"
    return (
        f"{stopped}; the run in {run_dir} is resumable: run the same command with resume=auto "
        f"(it continues in that folder, from {where})"
    )


@contextlib.contextmanager
def errors_as_messages(run_dir: Path | None = None) -> Iterator[None]:
    """Errors the user caused leave as one message and a non-zero exit, not a traceback.

    Hydra wraps an exception from the task in "Error executing job with overrides" and a hint about
    HYDRA_FULL_ERROR, but lets SystemExit through: a single run leaves by SystemExit(message), so
    the message is all it prints. A sweep member raises an exception Hydra prints compactly, as
    SystemExit would stop the whole sweep. With HYDRA_FULL_ERROR=1 the error itself goes on up.

    A SIGTERM or SIGINT (Lightning stops the loop and raises SystemExit with no status, which would
    read as success) leaves with the status a shell gives that signal (143, 130) and how to
    continue the run.
    """
    try:
        yield
    except (SIGTERMException, KeyboardInterrupt) as stop:
        # KeyboardInterrupt: Ctrl-C before or after the training loop, which hands it on as SIGTERM.
        received = signal.SIGINT if isinstance(stop, KeyboardInterrupt) else stop_signal()
        if is_main_process():  # the launching process speaks for the ranks it started
            print(terminated_message(run_dir, received), file=sys.stderr)
        raise SystemExit(stopped_status(received)) from None
    except Exception as error:
        message = user_message(error, run_dir)
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise StoppedByUserError(message) from error
        raise SystemExit(message) from None


@contextlib.contextmanager
def claimed(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for this process (processes it starts for other ranks share it)."""
    if not is_main_process():
        yield
        return
    claim = claim_run_dir(run_dir)
    try:
        yield
    finally:
        claim.release()


def pin_sweep_member(run_dir: Path) -> None:
    """Make processes launched for this sweep member re-run this member, not the whole sweep.

    Lightning starts DDP workers by re-running the command line with `hydra.run.dir` set to
    Hydra's run dir; in a multirun that command line is the sweep. Replace it with this member's
    own overrides and point the run dir at the member's folder.
    """
    sys.argv = [sys.argv[0], *HydraConfig.get().overrides.task]
    point_hydra_at(run_dir)


def continue_in_place(cfg: DictConfig, run_dir: Path) -> Path:
    """With resume=auto, a run on a fixed dataset that continues an unfinished run does so in that
    run's folder (one folder, one curve): the new folder Hydra made is removed, its log moved there."""
    if cfg.resume != "auto" or is_experiment(cfg) or started_by_lightning() or cluster_environment():
        return run_dir  # under torchrun or srun every rank has its folder from rank 0 (config/naming.py)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return run_dir  # a sweep member's folder is its place in the sweep
    found = agreed("continue_in", lambda: str(folder_to_continue(run_dir, resolved(cfg)) or "") or None)
    if found is None:
        return run_dir
    folder = Path(found)
    if is_main_process():
        print(f"resume=auto: continuing the unfinished run in its folder {folder}")
        move_log_files(run_dir, folder)
        discard_unused_folder(run_dir, Path(cfg.output_root))
    if HydraConfig.initialized():
        point_hydra_at(folder)
    return folder


def validated(cfg: DictConfig) -> DictConfig:
    """The config, checked once against its schemas and the overrides that made it."""
    validate_config(cfg, overrides=list(HydraConfig.get().overrides.task))
    return cfg


def run(
    cfg: DictConfig, run_dir: Path, *, overrides: Sequence[str] = (), validated: bool = False
) -> dict[str, Any]:
    """Validate (unless `validated`), then the built-in experiment when the data is a task, else
    one run on the dataset.

    What `python train.py` does once Hydra has composed `cfg` from the command line (`overrides`).
    The run holds `run_dir` while it runs, offline when every model source is local.
    """
    if not validated:
        validate_config(cfg, overrides=overrides)
    if (warning := learning_rate_warning(cfg)) is not None and is_main_process():
        warn(warning)
    keep_freed_memory()
    start = time.perf_counter()
    with offline_when_local(cfg), claimed(run_dir):
        if is_experiment(cfg):
            summary = run_experiment(cfg, run_dir)
            result(experiment_result(cfg, summary, time.perf_counter() - start))
        else:
            summary = train(cfg, run_dir, **generation_eval_parts(cfg, run_dir))
            result(run_result(cfg, summary, time.perf_counter() - start))
    return summary


def generation_eval_parts(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """With `evaluate.reward`, the callback that samples and scores, and the summary's `generation`
    block it fills as it runs; nothing otherwise."""
    if not generation_eval_wanted(cfg):
        return {}
    evaluation = generation_eval(cfg, run_dir)
    return {"callbacks": [evaluation], "extra_summary": {"generation": evaluation.record}}


# Keys of earlier versions, and what says the same thing now; refused with that, not Hydra's
# "not in struct" (which would suggest adding them with `+`, where they would do nothing).
RETIRED_KEYS = {
    "method": "RFT is a loss now: loss=rft (any other loss is preference training)",
    "task": "the task is the data now: data=arithmetic or data=gsm8k (task.* still sets its fields)",
}


def check_retired_overrides(arguments: Sequence[str]) -> None:
    """Refuse overrides of retired keys, all at once, before Hydra composes anything."""
    setting = [argument for argument in arguments if "=" in argument]  # `~task` alone is the validator's
    refused = [f"{key}: {RETIRED_KEYS[key]}" for key in override_keys(setting) if key in RETIRED_KEYS]
    if refused:
        raise SystemExit("\n".join(refused))


def check_launcher() -> None:
    """A launcher's environment that cannot start this world (SLURM's variables without srun's)
    is refused in one line before Hydra, whose folder names would fail on it as a traceback."""
    try:
        cluster_environment()
    except UserError as error:
        raise SystemExit(str(error)) from None


def main() -> None:
    """`python train.py [overrides]`: refuse retired keys, then compose, validate and train."""
    check_retired_overrides(sys.argv[1:])
    check_launcher()
    hydra_main()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    """Train (one run or the built-in experiment); return the `objective` metric, for sweepers."""
    return train_job(cfg)


def train_job(cfg: DictConfig) -> float | None:
    """What a Hydra main that trains does with the config it composed: validate, claim the run
    folder (or continue an unfinished one), train, and return the `objective` metric."""
    quiet_libraries()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun:
        pin_sweep_member(run_dir)
    overrides = list(HydraConfig.get().overrides.task)
    try:
        with errors_as_messages(run_dir):
            validate_config(cfg, overrides=overrides)
            run_dir = continue_in_place(cfg, run_dir)
        with errors_as_messages(run_dir):
            summary = run(cfg, run_dir, overrides=overrides, validated=True)
    except BaseException:
        # Refused by the checks: no folder is left for a run that never started (rank 0's to remove).
        if not multirun and is_main_process():
            discard_unused_folder(run_dir, Path(cfg.output_root))
        raise
    metrics = summary["metrics"]
    if cfg.objective not in metrics:
        warn(f"objective {cfg.objective!r} is not among this run's metrics: {', '.join(metrics)}")
        return None
    return metrics[cfg.objective]
