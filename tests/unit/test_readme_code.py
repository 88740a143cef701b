"""The README's code runs: every ```python block executes, every `dpo_exp.…` name it gives resolves
by import and getattr, and every file or folder of the repository it names exists."""

from __future__ import annotations

import importlib
import math
import re
from types import ModuleType

import pytest
import torch

from tests.conftest import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
# `dpo_exp.a.b` or `dpo_exp.a:b` (an import path, as `task.reward=` takes), not `…/dpo_exp.yaml`.
DOTTED_NAMES = sorted(set(re.findall(r"(?<![\w/.])dpo_exp(?:\.\w+)+(?::\w+)?", README)))
# A backticked span that is a path inside the repository: `dpo_exp/losses/`, `bench/memory.py`.
REPO_PATHS = sorted(set(re.findall(r"`((?:dpo_exp|tests|bench|conf|sweeps|docs)/[\w./-]*)`", README)))


def placeholders() -> dict[str, torch.Tensor]:
    """The per-sequence tensors the README's snippets stand for (the loss contract's names), B = 2:
    summed log-probs whose policy and reference margins are equal, h = 0."""
    return {
        "policy_chosen_logps": torch.tensor([-1.0, -4.0]),
        "policy_rejected_logps": torch.tensor([-2.0, -6.0]),
        "ref_chosen_logps": torch.tensor([-3.0, -5.0]),
        "ref_rejected_logps": torch.tensor([-4.0, -7.0]),
        "chosen_ntokens": torch.tensor([2, 4]),
        "rejected_ntokens": torch.tensor([3, 5]),
    }


def test_the_readme_has_python_code_and_module_names_to_check():
    assert PYTHON_BLOCKS and "dpo_exp.cli.main" in DOTTED_NAMES and "dpo_exp/cli.py" in REPO_PATHS


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda block: block.splitlines()[0][:40])
def test_a_python_block_runs(block: str):
    namespace = placeholders()
    exec(compile(block, "README.md", "exec"), namespace)


def test_the_loss_library_block_gives_ln2_per_pair_at_margin_zero():
    """h = (-1 - -2) - (-3 - -4) = 0 and (-4 - -6) - (-5 - -7) = 0: DPO is ln 2 = 0.693147, any β."""
    (block,) = [block for block in PYTHON_BLOCKS if "out = dpo_loss(" in block]
    namespace = placeholders()
    exec(compile(block, "README.md", "exec"), namespace)
    torch.testing.assert_close(namespace["out"].loss, torch.full((2,), math.log(2)))
    assert set(namespace["out"].metrics) == {"grad_weight"}


def resolve(name: str) -> object:
    """The object `name` names: the longest prefix that imports as a module, then attributes."""
    parts = name.replace(":", ".").split(".")
    for split in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)  # AttributeError: the README names nothing real
        return target
    raise ModuleNotFoundError(name)


@pytest.mark.parametrize("name", DOTTED_NAMES)
def test_a_dotted_name_resolves(name: str):
    target = resolve(name)
    if ":" in name:  # an import path a config takes: a function, not a module
        assert callable(target) and not isinstance(target, ModuleType), name


@pytest.mark.parametrize("path", REPO_PATHS)
def test_a_named_path_exists(path: str):
    assert (PROJECT_ROOT / path).exists(), path
    assert path.endswith("/") == (PROJECT_ROOT / path).is_dir(), path
