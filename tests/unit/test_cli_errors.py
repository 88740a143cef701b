"""How the entry ends a run on an error: the user's as its message alone, a bug as itself."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hydra.types import RunMode

from dpo_exp.cli import StoppedByUserError, errors_as_messages
from dpo_exp.errors import DataError


def test_a_user_error_leaves_as_its_message_which_hydra_prints_unwrapped():
    with pytest.raises(SystemExit) as stopped, errors_as_messages():
        raise DataError("data file not found: /x.jsonl", file="data.train_path")
    assert stopped.value.code == "data.train_path: data file not found: /x.jsonl"  # printed, exit 1


def test_a_bug_goes_on_up_as_itself_for_hydra_to_show():
    with pytest.raises(KeyError, match="a bug"), errors_as_messages():
        raise KeyError("a bug")


def test_a_sweep_members_user_error_lets_the_sweep_go_on(monkeypatch):
    multirun = SimpleNamespace(initialized=lambda: True, get=lambda: SimpleNamespace(mode=RunMode.MULTIRUN))
    monkeypatch.setattr("dpo_exp.cli.HydraConfig", multirun)
    with pytest.raises(StoppedByUserError, match="beta must be"), errors_as_messages():
        raise DataError("beta must be > 0")  # SystemExit here would stop the members after it
