"""`dpo-exp --help` lists the subcommands; a subcommand's --help is its own (Hydra's for the runs)."""

from __future__ import annotations

import sys

import pytest

from dpo_exp.commands import COMMANDS, console_main


def help_of(monkeypatch, capsys, *arguments: str) -> str:
    monkeypatch.setattr(sys, "argv", ["dpo-exp", *arguments])
    try:
        console_main()
    except SystemExit as stopped:
        assert stopped.code in (None, 0)
    return capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_subcommand_with_one_line(monkeypatch, capsys, flag):
    shown = help_of(monkeypatch, capsys, flag)
    for name in ("train", "sft", "sample", "data-report", "evaluate", "compare"):
        line = next(line for line in shown.splitlines() if line.strip().startswith(f"{name} "))
        assert COMMANDS[name][0] in line
    assert "== Config ==" not in shown and "Powered by Hydra" not in shown


def test_a_subcommands_help_is_still_its_own(monkeypatch, capsys):
    shown = help_of(monkeypatch, capsys, "train", "--help")
    assert "== Config ==" in shown and "optim" in shown  # Hydra's: the settings it would compose
    assert "usage: dpo-exp compare" in help_of(monkeypatch, capsys, "compare", "--help")


def test_evaluate_has_hydras_help_of_its_settings(monkeypatch, capsys):
    shown = help_of(monkeypatch, capsys, "evaluate", "--help")
    assert "== Config ==" in shown and "ref_path" in shown


def test_the_sft_line_says_it_fine_tunes_on_your_demonstrations(monkeypatch, capsys):
    (line,) = [
        line
        for line in help_of(monkeypatch, capsys, "--help").splitlines()
        if line.strip().startswith("sft ")
    ]
    assert "data=demonstrations data.train_path=<file>" in line and "experiment's SFT checkpoint" in line
