"""The keys a launch set: those that differ from what its group options alone would give.

A setting that would do nothing is refused wherever it was set: on the command line, in a user's
config (`--config-dir`), or in an experiment preset. What the chosen options of conf/'s groups
(`model=`, `data=`, `loss=`, ...) give on their own is the baseline: a data preset's own values (a
dataset's `val_size: 0` beside its validation split) are its defaults, not the user's choices.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONF_DIR = str(Path(__file__).resolve().parent.parent.parent / "conf")
# The groups of conf/config.yaml's defaults whose chosen option is part of the baseline (an
# `experiment` preset is not: what it sets, the user chose).
GROUPS = ("model", "loss", "strategy", "trainer", "logger", "sft", "sample", "evaluate", "data")
# The groups whose option's file sets `name` to the option's own name.
NAMED_GROUPS = ("model", "loss", "logger", "data")


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The dotted keys that `key=value`, `+key=value` and `~key` overrides set."""
    return [override.lstrip("+~").split("=", 1)[0] for override in overrides]


def set_keys(cfg: DictConfig, overrides: Sequence[str] = ()) -> list[str]:
    """The dotted keys the launch set: its overrides', and every leaf whose value differs from the
    baseline (or that the baseline lacks), in order, each once."""
    keys = override_keys(overrides)
    baseline = baseline_config(group_choices(cfg))
    if baseline is not None:
        keys += [key for key, _ in leaves(cfg) if differs(cfg, baseline, key)]
    return list(dict.fromkeys(keys))


def group_choices(cfg: DictConfig) -> tuple[str, ...]:
    """`group=option` for the groups of the baseline: Hydra's record of this launch's choices, or,
    outside a launch (a config composed in a test), the options the config's names give."""
    named = {
        group: cfg[group].get("name") for group in NAMED_GROUPS if isinstance(cfg.get(group), DictConfig)
    }
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        if all(choices.get(group) == name for group, name in named.items() if group in ("data", "loss")):
            return tuple(f"{group}={choices[group]}" for group in GROUPS if choices.get(group) is not None)
    return tuple(f"{group}={name}" for group, name in named.items() if name is not None)


def baseline_config(choices: tuple[str, ...]) -> DictConfig | None:
    """The config the group options give alone, or None when it cannot be composed: then only the
    command line's overrides count as set."""
    for tried in (choices, tuple(c for c in choices if c.split("=")[0] not in NAMED_GROUPS)):
        try:
            return composed(tried)
        except (HydraException, OmegaConfBaseException):
            continue  # an option named differently from its file: try the groups' defaults
    return None


@functools.lru_cache(maxsize=32)
def composed(choices: tuple[str, ...]) -> DictConfig:
    if GlobalHydra.instance().is_initialized():  # in a launch: its search path, --config-dir's too
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        cfg = hydra.compose_config("config", list(choices), run_mode=RunMode.RUN, from_shell=False)
    else:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=list(choices))
    with_hydra = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(with_hydra, dict)
    with_hydra.pop("hydra", None)
    return OmegaConf.create(with_hydra)


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, node) of every value that is not a mapping (a list is one value)."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            if prefix == "" and key == "hydra":
                continue
            yield from leaves(node._get_node(key), f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), node


def differs(cfg: DictConfig, baseline: DictConfig, key: str) -> bool:
    """Whether `key` holds another value than the baseline's, as written and once resolved (an
    interpolation resolved in place, or `output_root` moving `${output_root}/...`, changes neither)."""
    try:
        if OmegaConf.select(baseline, key, default=ABSENT, throw_on_missing=False) is ABSENT:
            return True
    except OmegaConfBaseException:
        pass  # there, but its interpolation needs a value only the run sets (`optim.lr` from `model.path`)
    if raw(cfg, key) == raw(baseline, key):
        return False
    try:
        return resolved(cfg, key) != resolved(baseline, key)
    except OmegaConfBaseException:
        return True


ABSENT = object()


def raw(cfg: DictConfig, key: str) -> Any:
    """The value at `key` as written: an interpolation as its text."""
    parent, _, leaf = key.rpartition(".")
    node = (OmegaConf.select(cfg, parent) if parent else cfg)._get_node(leaf)
    return OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node._value()


def resolved(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
