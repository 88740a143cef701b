"""The README's test command runs the fast tier; `pytest -m slow` runs the end-to-end tier."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def collected(*arguments: str) -> set[str]:
    """The test ids `pytest --collect-only` selects with these arguments."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *arguments]
    printed = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    return {line for line in printed.splitlines() if "::" in line}


def test_a_bare_pytest_is_the_fast_tier_and_minus_m_slow_the_rest():
    fast, slow, every = collected(), collected("-m", "slow"), collected("-m", "slow or not slow")
    assert fast and slow and not fast & slow and fast | slow == every
    assert {test.split("/")[1] for test in fast} == {"unit", "integration"}
    assert {test for test in every if test.startswith("tests/e2e/")} <= slow  # the whole folder
    assert any(test.startswith("tests/e2e/test_readme.py") for test in slow)  # unmarked, slow by its folder


def test_a_test_named_on_the_command_line_runs_whatever_its_mark():
    named = "tests/e2e/test_tiers.py::test_ci_runs_both_tiers_after_installing_from_the_lock"
    assert collected(named) == {named}
    assert len(collected("tests/e2e/test_tiers.py")) == 4


def test_ci_runs_both_tiers_after_installing_from_the_lock():
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert '-c constraints.txt -e ".[dev]"' in ci
    assert ".venv/bin/python -m pytest -q\n" in ci and ".venv/bin/python -m pytest -q -m slow" in ci


def test_the_package_pins_no_exact_version():
    import tomllib

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    assert requirements and not [r for r in requirements if "==" in r]
    assert all("<" in r for r in requirements if not r.startswith("dpo_exp["))  # each below a next major
