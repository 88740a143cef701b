"""The code of the README and of the pages under docs/ runs: every ```python block executes, every
`dpo_exp.…` name they give resolves by import and getattr, every file or folder of the repository
they name exists, and every relative link between them resolves to a file and, with `#`, to one of
its headings."""

from __future__ import annotations

import importlib
import math
import re
from types import ModuleType

import pytest
import torch

from tests.conftest import PROJECT_ROOT

# The documentation a reader follows: the README, CONTRIBUTING.md and every page under docs/.
PAGES = {path: (PROJECT_ROOT / path).read_text() for path in ("README.md", "CONTRIBUTING.md")} | {
    f"docs/{page.name}": page.read_text() for page in sorted((PROJECT_ROOT / "docs").glob("*.md"))
}
TEXT = "\n".join(PAGES.values())
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)
# `dpo_exp.a.b` or `dpo_exp.a:b` (an import path, as `task.reward=` takes), not `…/dpo_exp.yaml`.
DOTTED_NAMES = sorted(set(re.findall(r"(?<![\w/.])dpo_exp(?:\.\w+)+(?::\w+)?", TEXT)))
# A backticked span that is a path inside the repository: `dpo_exp/losses/`, `bench/memory.py`.
REPO_PATHS = sorted(set(re.findall(r"`((?:dpo_exp|tests|bench|conf|sweeps|docs)/[\w./-]*)`", TEXT)))
# A Markdown link or image whose target is not a web address: `[text](docs/losses.md#β-per-loss)`.
RELATIVE_LINKS = sorted(
    {(path, target) for path, text in PAGES.items()
     for target in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", target)}
)  # fmt: skip


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
    exec(compile(block, "the documentation", "exec"), namespace)


def test_the_loss_library_block_gives_ln2_per_pair_at_margin_zero():
    """h = (-1 - -2) - (-3 - -4) = 0 and (-4 - -6) - (-5 - -7) = 0: DPO is ln 2 = 0.693147, any β."""
    (block,) = [block for block in PYTHON_BLOCKS if "out = dpo_loss(" in block]
    namespace = placeholders()
    exec(compile(block, "docs/losses.md", "exec"), namespace)
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


def anchor(heading: str) -> str:
    """The `#fragment` GitHub gives a heading: lower case, punctuation but `-` and `_` dropped
    (letters such as β kept), spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The fragments of a page's headings (outside code blocks)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return {anchor(heading) for heading in re.findall(r"^#{1,6} (.+)$", prose, re.M)}


def test_the_anchor_of_a_heading_is_githubs():
    assert anchor("Choosing the loss and β") == "choosing-the-loss-and-β"
    assert anchor("Comparing runs: `dpo-exp compare`") == "comparing-runs-dpo-exp-compare"
    assert anchor("W&B, offline") == "wb-offline"


def test_the_pages_link_to_each_other():
    linked = {(path, target.split("#")[0]) for path, target in RELATIVE_LINKS}
    assert ("README.md", "docs/losses.md") in linked and ("docs/losses.md", "../README.md") in linked


@pytest.mark.parametrize(("page", "target"), RELATIVE_LINKS, ids=[f"{p}->{t}" for p, t in RELATIVE_LINKS])
def test_a_relative_link_resolves_to_a_file_and_a_heading(page: str, target: str):
    file, _, fragment = target.partition("#")
    resolved = ((PROJECT_ROOT / page).parent / file).resolve() if file else PROJECT_ROOT / page
    assert resolved.exists(), f"{page}: {target}"
    if fragment:
        assert fragment in anchors(resolved.read_text()), f"{page}: {target}"
