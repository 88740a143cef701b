"""The shell commands of the README and of the pages under docs/, and the real files that stand in
for the reader's own: what test_readme.py composes and test_readme_runs.py runs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from dpo_exp.commands import COMMANDS
from tests.conftest import GSM8K_CARD, PROJECT_ROOT
from tests.helpers import FAST_TRAINER, dpo_exp_command, train_py

README = (PROJECT_ROOT / "README.md").read_text()
# The documentation a reader follows: the README and every page under docs/, by path.
PAGES = {"README.md": README} | {
    f"docs/{page.name}": page.read_text() for page in sorted((PROJECT_ROOT / "docs").glob("*.md"))
}
SWEEPS_DIR = PROJECT_ROOT / "sweeps"
SUBCOMMANDS = tuple(COMMANDS)
IMDB = PROJECT_ROOT / "tests" / "fixtures" / "imdb"
# Run folders the pages name, made by an earlier command: filled in once it has run.
RUN_FOLDER = "outputs/runs/<run name>/<time>-<hash>"
SFT_EXPORT = "outputs/runs/<sft run>/<time>-<hash>/model"
RUN_TO_EVALUATE = (
    "python train.py model=hf model.path=/path/to/sft data=pairs data.train_path=prefs.jsonl "
    "loss=ipo beta=0.1"
)


def page_commands(text: str) -> list[str]:
    """`python train.py ...` and `dpo-exp ...` lines of a page's bash blocks, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #")[0].strip()
            if command.startswith(("python train.py", "dpo-exp")):
                commands.append(" ".join(command.split()))
    return list(dict.fromkeys(commands))


def readme_commands() -> list[str]:
    """Every documented command: those of the README, then those of each page under docs/."""
    return list(dict.fromkeys(command for text in PAGES.values() for command in page_commands(text)))


def is_hydra_command(command: str) -> bool:
    """A command that composes the Hydra config (every README command but `dpo-exp compare`)."""
    return not command.startswith("dpo-exp compare")


def reader_stand_ins(
    folder: Path, model_dir: Path, hh_repo: Path, gpt2_dir: Path, classifier_dir: Path
) -> dict[str, str]:
    """Real files for the documented placeholders: a model folder, an SFT LoRA adapter saved by peft
    on it, a pairs file and a held-out one, a demonstrations file, a reward function, local copies of
    hub repositories (HH-RLHF, IMDb, a GPT-2, a sentiment classifier), and folders in place of the
    relative output paths the README writes to (`outputs/...` of the reader's clone). A run folder
    an earlier command makes is filled in after it runs (`evaluated_run_stand_ins`)."""
    adapter = folder / "sft-lora"
    lora = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), lora)
    torch.manual_seed(0)
    with torch.no_grad():  # an adapter that changes the model (peft starts B at 0: no change)
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(std=0.1)
    model.save_pretrained(adapter)
    prefs = folder / "prefs.jsonl"
    rows = [{"prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(120)]
    prefs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    heldout = folder / "heldout.jsonl"
    rows = [
        {"prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i - 1)} for i in range(200, 230)
    ]
    heldout.write_text("".join(json.dumps(row) + "\n" for row in rows))
    demos = folder / "demos.jsonl"
    rows = [{"prompt": f"{i}+{i}=", "completion": str(2 * i)} for i in range(80)]
    demos.write_text("".join(json.dumps(row) + "\n" for row in rows))
    model_path = str(model_dir)
    return {
        "/path/to/sft": model_path,
        "/ckpt/my-sft": model_path,
        "/ckpt/sft-lora": str(adapter),
        "/ckpt/sft": model_path,
        "/ckpt/base": model_path,
        "prefs.jsonl": str(prefs),
        "/data/hh-rlhf": str(hh_repo),
        # docs/sft_then_dpo.md (the SFT run's export is filled in once `dpo-exp sft` has run)
        "/path/to/base": model_path,
        "demos.jsonl": str(demos),
        "pairs.jsonl": str(prefs),
        SFT_EXPORT: model_path,
        # docs/evaluate.md (the run folders are filled in by `evaluated_run_stand_ins`)
        "heldout.jsonl": str(heldout),
        "<policy folder>": model_path,
        "<base folder>": model_path,
        "<base>": model_path,
        # docs/reward_eval.md and docs/prompt_tasks.md
        "my_module:score": "tests.e2e.rewards:score",
        "/data/imdb": str(IMDB),
        "/models/gpt2-large": str(gpt2_dir),
        "/models/sentiment-roberta-large-english": str(classifier_dir),
        "outputs/my_run": str(folder / "outputs" / "my_run"),
        "outputs/tune/dpo": str(folder / "outputs" / "tune" / "dpo"),
    }


def train_a_run_to_evaluate(folder: Path, stand_ins: dict[str, str]) -> Path:
    """The README's run on the reader's pairs, at 4 steps with checkpoints at steps 2 and 4 and
    validation at 0, 2 and 4: the run folder docs/evaluate.md's commands evaluate."""
    small = [*FAST_TRAINER, "data.val_size=20", "checkpoint.every_n_steps=2", f"output_root={folder}"]
    result = launch(RUN_TO_EVALUATE, stand_ins, *small)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = folder.glob("runs/*/*")
    return run_dir


def evaluated_run_stand_ins(run_dir: Path) -> dict[str, str]:
    """docs/evaluate.md's run placeholders: a finished run's folder, its checkpoint at step 2 (for
    the page's step 200), and its export as the policy folder of the commands without `run=`."""
    (checkpoint,) = (run_dir / "checkpoints").glob("step000002.ckpt")
    return {
        RUN_FOLDER: str(run_dir),
        f"{RUN_FOLDER}/checkpoints/step000200.ckpt": str(checkpoint),
        "<run folder>": str(run_dir),
        "<policy folder>": str(run_dir / "model"),
    }


def gsm8k_stand_in(folder: Path, rows: int = 120) -> Path:
    """A folder laid out as openai/gsm8k (subset `main`): word problems whose final answers, 1 or 2,
    a tiny model learns to write within a few dozen SFT steps, and gets right about half the time."""
    (folder / "main").mkdir(parents=True)
    problems = [{"question": f"Is {i} odd? 2 for yes, 1 for no.", "answer": f"#### {1 + i % 2}"}
                for i in range(rows)]  # fmt: skip
    (folder / "main" / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    (folder / "main" / "test.jsonl").write_text(json.dumps(problems[0]) + "\n")
    (folder / "README.md").write_text(GSM8K_CARD)
    return folder


def arguments(command: str, stand_ins: dict[str, str]) -> list[str]:
    """The command's arguments as the shell passes them, placeholders (a `key=` value or a whole
    word; one in angle brackets, which may hold spaces, wherever it is) replaced by their stand-ins."""
    for placeholder in sorted((name for name in stand_ins if "<" in name), key=len, reverse=True):
        command = command.replace(placeholder, shlex.quote(stand_ins[placeholder]))
    words = shlex.split(command)[2:]  # drop `python train.py` / `dpo-exp <command>`
    if command.startswith("dpo-exp") and words and words[0] in SUBCOMMANDS:
        words = words[1:]
    for placeholder, real in stand_ins.items():
        words = [real if word == placeholder else word for word in words]
        words = [re.sub(rf"=({re.escape(placeholder)})$", f"={real}", word) for word in words]
    return words


def launch(command: str, stand_ins: dict[str, str], *appended: str) -> subprocess.CompletedProcess:
    """The README command in a subprocess from the project root, offline, `appended` after its own
    arguments (later values win)."""
    words = arguments(command, stand_ins)
    if command.startswith("python train.py"):
        return train_py(*words, *appended)
    return dpo_exp_command(shlex.split(command)[1], *words, *appended)
