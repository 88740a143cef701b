"""No network for a run that needs none: every model and dataset it reads is local or built."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from omegaconf import DictConfig

from dpo_exp.models.reward import is_function
from dpo_exp.rows import is_local_dataset


def sources_are_local(cfg: DictConfig) -> bool:
    """Whether every model, reference, tokenizer and adapter is built from config or read locally,
    and the data (or the task's problems) is generated or read from local files or folders."""
    keys = ("path", "ref_path", "tokenizer_path", "adapter_path")
    paths = [cfg.model.get(key) for key in keys]
    if not all(path is None or os.path.exists(os.path.expanduser(str(path))) for path in paths):
        return False
    hub_data = cfg.data.get("train_path") is None and cfg.data.get("dataset")
    options = cfg.task.get("options") or {} if cfg.get("task") is not None else {}
    hub_task = options.get("path") is None and options.get("dataset")
    if not all(path is None or os.path.exists(os.path.expanduser(str(path))) for path in reward_paths(cfg)):
        return False
    return not any(dataset and not is_local_dataset(str(dataset)) for dataset in (hub_data, hub_task))


def reward_paths(cfg: DictConfig) -> list[str | None]:
    """The classifiers a run loads (its task's reward and evaluation's) and a prompt set's
    tokenizer: paths or hub ids."""
    paths = []
    for section in ("task", "evaluate"):
        spec = cfg[section].get("reward") if cfg.get(section) is not None else None
        paths.append(None if spec is None or is_function(str(spec)) else spec)
    options = cfg.task.get("options") or {} if cfg.get("task") is not None else {}
    return [*paths, options.get("tokenizer")]


@contextlib.contextmanager
def offline_when_local(cfg: DictConfig) -> Iterator[None]:
    """No network for a run that needs none: the Hugging Face libraries' offline switches on
    (they would otherwise send usage requests), unless the environment sets them; restored after."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    if not sources_are_local(cfg) or any(name in os.environ for name in names):
        yield
        return
    import huggingface_hub.constants as hub

    libraries = [(hub, "HF_HUB_OFFLINE")]
    if "datasets.config" in sys.modules:  # read the switches when imported: set them where they live
        libraries += [(sys.modules["datasets.config"], name) for name in names]
    saved = [(module, name, getattr(module, name)) for module, name in libraries]
    try:
        os.environ.update(dict.fromkeys(names, "1"))
        for module, name in libraries:
            setattr(module, name, True)
        yield
    finally:
        for name in names:
            os.environ.pop(name, None)
        for module, name, value in saved:
            setattr(module, name, value)
