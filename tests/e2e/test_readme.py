"""Every command the README prints does what the README says of it.

Each `python train.py` / `dpo-exp` line in the README's code blocks is composed with Hydra exactly
as the shell would pass it (paths that stand for the reader's own files replaced by real ones) and
validated as the entry validates it; a list below says what each line must train on, and a line
without an entry fails the test, so a new README command needs its check. The commands the README
leads with are also run for real, at a reduced size, and their run folders checked: the resolved
config, the data report and the token counts show that the named model and data were used.
"""

# ruff: noqa: E501  (README command lines are kept whole, as the README prints them)
from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from safetensors.torch import save_file

from dpo_exp.cli import COMMANDS, CONF_DIR, RETIRED_KEYS, check_retired_overrides
from dpo_exp.config import is_experiment, validate_config
from tests.conftest import PROJECT_ROOT
from tests.helpers import FAST_MODEL, FAST_TRAINER, dpo_exp_command, train_py

README = (PROJECT_ROOT / "README.md").read_text()
SWEEPS_DIR = PROJECT_ROOT / "sweeps"


def readme_commands() -> list[str]:
    """`python train.py ...` and `dpo-exp ...` lines of the README's bash blocks, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #")[0].strip()
            if command.startswith(("python train.py", "dpo-exp")) and not command.startswith(
                "dpo-exp compare"
            ):
                commands.append(" ".join(command.split()))
    return list(dict.fromkeys(commands))


# What each command trains on: (data name, experiment or not). Placeholders of the reader's own
# files are replaced by real ones in `arguments`.
EXPECTED = {
    "python train.py": ("arithmetic", True),
    "python train.py data=synthetic loss=ipo beta=0.1": ("synthetic", False),
    "python train.py data=hh_helpful experiment=hh_helpful_tiny": ("hh_helpful", False),
    "python train.py model=hf model.path=/path/to/sft data=pairs data.train_path=prefs.jsonl loss=ipo beta=0.1": (
        "pairs",
        False,
    ),
    "python train.py -m beta=0.01,0.1,0.5 loss=dpo,ipo": ("arithmetic", True),
    "dpo-exp data-report data=hh_helpful": ("hh_helpful", False),
    "python train.py loss=ipo beta=0.5": ("arithmetic", True),
    "python train.py loss=rft": ("arithmetic", True),
    "python train.py online.rounds=2": ("arithmetic", True),
    "python train.py loss=rft online.rounds=2": ("arithmetic", True),
    "python train.py -m beta=0.5,1,2,4 seed=0,1,2": ("arithmetic", True),
    "dpo-exp sft": ("arithmetic", True),
    "dpo-exp sample": ("arithmetic", True),
    "python train.py data=gsm8k task.reward=dpo_exp.tasks.gsm8k:reward": ("gsm8k", True),
    "python train.py -m beta=0.01,0.05,0.1,0.5 loss=dpo,ipo": ("arithmetic", True),
    "python train.py --config-dir sweeps --config-name beta_grid": ("arithmetic", True),
    "python train.py --config-dir sweeps --config-name seeds hydra/launcher=parallel": ("arithmetic", True),
    "python train.py --config-dir sweeps --config-name optuna_beta_lr": ("arithmetic", True),
    "python train.py --config-dir sweeps --config-name iterative": ("arithmetic", True),
    "python train.py --config-dir sweeps --config-name tune_dpo output_root=outputs/tune/dpo": (
        "arithmetic",
        True,
    ),
    "python train.py --config-dir sweeps --config-name beta_grid hydra/launcher=slurm hydra.launcher.partition=gpu": (
        "arithmetic",
        True,
    ),
    "python train.py data=synthetic strategy=ddp strategy.devices=2": ("synthetic", False),
    "python train.py -m data=synthetic strategy=ddp beta=0.1,0.5": ("synthetic", False),
    "python train.py hydra.run.dir=outputs/my_run resume=auto": ("arithmetic", True),
    "python train.py model=qwen2 data=hh_helpful": ("hh_helpful", False),
    "python train.py model=llama model.path=/ckpt/my-sft data=hh_helpful": ("hh_helpful", False),
    "python train.py model=pythia model.revision=step143000 model.activation_checkpointing=true data=hh_helpful": (
        "hh_helpful",
        False,
    ),
    "python train.py model=llama model.path=/ckpt/sft data=hh_helpful "
    "'model.lora={r:16,alpha:32,dropout:0.05,target_modules:all-linear}' trainer.precision=bf16-mixed": (
        "hh_helpful",
        False,
    ),
    "python train.py model=llama model.path=/ckpt/base model.adapter_path=/ckpt/sft-lora data=hh_helpful "
    "model.adapter_reference=adapter export.lora=adapter": ("hh_helpful", False),
    "python train.py data=ultrafeedback model=qwen2": ("ultrafeedback", False),
    "python train.py data=hh_helpful data.dataset=/data/hh-rlhf data.revision=null": ("hh_helpful", False),
}


@pytest.fixture(scope="module")
def reader_files(tmp_path_factory, tiny_model_dir, hh_fixture_repo) -> dict[str, str]:
    """Real stand-ins for the README's placeholders: a model folder, an adapter, a pairs file, a
    local copy of a hub dataset repository."""
    folder = tmp_path_factory.mktemp("reader")
    adapter = folder / "sft-lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    save_file({"base_model.model.lora_A.weight": torch.zeros(4, 8)}, adapter / "adapter_model.safetensors")
    prefs = folder / "prefs.jsonl"
    rows = [{"prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(120)]
    prefs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    model = str(tiny_model_dir)
    return {
        "/path/to/sft": model,
        "/ckpt/my-sft": model,
        "/ckpt/sft-lora": str(adapter),
        "/ckpt/sft": model,
        "/ckpt/base": model,
        "prefs.jsonl": str(prefs),
        "/data/hh-rlhf": str(hh_fixture_repo),
    }


def arguments(command: str, reader_files: dict[str, str]) -> list[str]:
    """The command's arguments as the shell passes them, placeholders replaced."""
    words = shlex.split(command)[2:]  # drop `python train.py` / `dpo-exp <command>`
    if command.startswith("dpo-exp") and words and words[0] in COMMANDS:
        words = words[1:]
    for placeholder, real in reader_files.items():
        words = [re.sub(rf"=({re.escape(placeholder)})$", f"={real}", word) for word in words]
    return words


def sweep_members(overrides: list[str]) -> list[list[str]]:
    """Every member of a basic-sweeper multirun (`key=a,b` expands), at most 12."""
    choices = [[f"{o.split('=', 1)[0]}={v}" for v in o.split("=", 1)[1].split(",")] for o in overrides]
    return [list(member) for member in itertools.islice(itertools.product(*choices), 12)]


def compose_command(words: list[str]) -> list:
    """The configs (one per sweep member) the command composes, with the overrides of each."""
    multirun = "-m" in words
    words = [word for word in words if word != "-m"]
    if "--config-name" in words:
        name = words[words.index("--config-name") + 1]
        rest = [w for w in words if w not in ("--config-dir", "sweeps", "--config-name", name)]
        with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3"):
            search_path = f"hydra.searchpath=[file://{CONF_DIR}]"
            swept = compose(name, overrides=[search_path, *rest], return_hydra_config=True)
            params = {k: str(v) for k, v in swept.hydra.sweeper.params.items() if "(" not in str(v)}
            member = [f"{k}={v.split(',')[0]}" for k, v in params.items()]
            user = [w for w in rest if not w.startswith("hydra")]
            return [(compose(name, overrides=[search_path, *rest, *member]), user + member)]
    members = sweep_members(words) if multirun else [words]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return [(compose("config", overrides=member), member) for member in members]


def test_every_readme_command_has_a_check():
    assert set(readme_commands()) == set(EXPECTED)


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_composes_validates_and_names_its_data(command, reader_files):
    data_name, experiment = EXPECTED[command]
    words = arguments(command, reader_files)
    check_retired_overrides(words)
    for cfg, overrides in compose_command(words):
        validate_config(cfg, overrides=overrides)
        assert cfg.data.name == data_name and is_experiment(cfg) == experiment
        for word in overrides:  # every value the command sets is the value the run gets
            key, _, value = word.lstrip("+").partition("=")
            if key.startswith(("model.", "data.", "loss.", "optim.", "online.")) and "{" not in value:
                assert cfg_value(cfg, key) == yaml.safe_load(value), key


def cfg_value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


# -- the leading commands, run for real at a reduced size --------------------------------------

SMALL_EXPERIMENT = [
    *FAST_MODEL,
    *FAST_TRAINER,
    "task.splits.eval=16",
    "task.splits.tune=8",
    "task.splits.sft=64",
    "task.splits.sample=48",
    "task.splits.sample_val=16",
    "task.splits.sft_check=16",
    "sft.steps=40",
    "sft.target_reward=null",
    "sft.batch_size=16",
    "sft.lr=1e-2",
    "sample.num_samples=8",
    "evaluate.batch_size=16",
    "task.reward=tests.e2e.rewards:partial_credit",
    "task.pass_threshold=0.5",
]


def only_run(output_root: Path) -> Path:
    (named,) = (output_root / "runs").iterdir()
    (run_dir,) = named.iterdir()
    return run_dir


def run_readme_command(tmp_path: Path, command: str, reader_files: dict[str, str], *reduced: str) -> Path:
    result = train_py(*arguments(command, reader_files), *reduced, f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run(tmp_path)


def test_the_default_job_runs_the_built_in_experiment(tmp_path, reader_files):
    run_dir = run_readme_command(tmp_path, "python train.py", reader_files, *SMALL_EXPERIMENT)
    summary = json.loads((run_dir / "summary.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["name"] == "arithmetic" and config["task"]["name"] == "arithmetic"
    sample_dir = Path(summary["stages"]["sample"]["path"])
    assert config["data"]["train_path"] == str(sample_dir / "pairs.jsonl")  # trained on its samples
    assert config["model"]["path"] == str(Path(summary["stages"]["sft"]["path"]) / "model")
    pairs = sum(1 for _ in (sample_dir / "pairs.jsonl").open())
    assert summary["data"]["train"]["rows_read"] == pairs and summary["tokens"] > 0
    assert "eval/true_reward" in summary["metrics"] and "eval/true_reward" in summary["reference"]


def test_a_named_model_trains_on_the_named_pairs_file(tmp_path, reader_files):
    command = "python train.py model=hf model.path=/path/to/sft data=pairs data.train_path=prefs.jsonl loss=ipo beta=0.1"
    run_dir = run_readme_command(tmp_path, command, reader_files, *FAST_TRAINER, "data.val_size=20")
    summary = json.loads((run_dir / "summary.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["path"] == reader_files["/path/to/sft"]
    assert config["data"]["train_path"] == reader_files["prefs.jsonl"] and config["loss"]["name"] == "ipo"
    assert summary["loss"] == "ipo" and summary["beta"] == 0.1
    assert summary["data"]["train"]["rows_read"] == 100 and summary["data"]["validation"]["rows_read"] == 20
    assert "stages" not in summary and "task" not in config  # no SFT, no sampling
    assert summary["tokens"] > 0


HH_TINY = "python train.py data=hh_helpful experiment=hh_helpful_tiny"
HH_REDUCED = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
              "+data.options.max_rows=40", *FAST_MODEL]  # fmt: skip


def check_hh_run(run_dir: Path, repo: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["source"] == "hh_rlhf" and config["data"]["dataset"] == str(repo)
    assert config["data"]["data_dir"] == "helpful-base" and config["data"]["validation_split"] == "test"
    assert summary["data"]["train"]["source"] == f"{repo} (data_dir helpful-base, split train)"
    assert summary["data"]["train"]["row_format"] == "implicit prompt (HH-RLHF transcripts)"
    assert summary["data"]["train"]["rows_read"] == 40 and summary["global_step"] == 2
    assert summary["tokens"] > 2 * 4 * 20  # 2 steps of 4 pairs of real transcripts, not 5-token sums


def test_hh_helpful_trains_on_a_local_copy_of_the_hub_repository(tmp_path, reader_files, hh_fixture_repo):
    # The preset names Anthropic/hh-rlhf at a pinned revision; offline, a folder laid out as that
    # repository stands in (here the shipped transcripts), read through the same loading path.
    local = [f"data.dataset={hh_fixture_repo}", "data.revision=null"]
    run_dir = run_readme_command(tmp_path, HH_TINY, reader_files, *local, *HH_REDUCED)
    check_hh_run(run_dir, hh_fixture_repo)


@pytest.mark.real_data
def test_hh_helpful_trains_on_the_real_rows(tmp_path, reader_files, hh_rlhf_repo):
    local = [f"data.dataset={hh_rlhf_repo}", "data.revision=null"]
    run_dir = run_readme_command(tmp_path, HH_TINY, reader_files, *local, *HH_REDUCED)
    check_hh_run(run_dir, hh_rlhf_repo)


def test_hh_helpful_offline_with_no_cached_copy_says_so_in_one_line(tmp_path, reader_files):
    # The test session's datasets cache is empty and the hub is off: what a researcher offline sees.
    result = train_py(*arguments(HH_TINY, reader_files), *HH_REDUCED, f"output_root={tmp_path}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "Anthropic/hh-rlhf" in line]
    assert (
        "Anthropic/hh-rlhf@09be8c5 (data_dir helpful-base, split train): could not load the dataset" in line
    )
    assert "data.dataset=<a folder laid out as the hub repository> data.revision=null" in line
    assert not list(tmp_path.rglob("summary.json"))


def test_the_synthetic_headline_run(tmp_path, reader_files):
    command = "python train.py data=synthetic loss=ipo beta=0.1"
    run_dir = run_readme_command(tmp_path, command, reader_files, *FAST_MODEL, *FAST_TRAINER)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["loss"] == "ipo" and summary["beta"] == 0.1 and summary["global_step"] == 4
    assert summary["data"]["train"]["rows_read"] == 4000 - 256


def test_the_data_report_command_reports_the_named_data(reader_files, hh_fixture_repo):
    local = [f"data.dataset={hh_fixture_repo}", "data.revision=null"]
    result = dpo_exp_command("data-report", "data=hh_helpful", *local, "+data.options.max_rows=10")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train data (hh_helpful): 10 rows read" in result.stdout
    assert (
        f"read from {hh_fixture_repo} (data_dir helpful-base, split train), format: implicit prompt"
        in result.stdout
    )


# -- the commands of earlier versions are refused with what to type instead ---------------------


def test_retired_keys_are_refused_all_at_once_with_their_replacement():
    with pytest.raises(SystemExit) as raised:
        check_retired_overrides(["~task", "method=rft", "task=gsm8k", "online.rounds=3"])
    message = str(raised.value)
    assert "method: " + RETIRED_KEYS["method"] in message and "task: " + RETIRED_KEYS["task"] in message


def test_the_old_single_run_incantation_is_refused_naming_its_keys(tmp_path):
    result = train_py("~task", "method=rft", "online.rounds=3", f"output_root={tmp_path}")
    assert result.returncode != 0 and "method: RFT is a loss now: loss=rft" in result.stderr
    assert not (tmp_path / "runs").exists()
    result = train_py("data=synthetic", "loss=rft", "online.rounds=3", f"output_root={tmp_path}")
    assert result.returncode != 0
    assert "online.rounds: data=synthetic is a fixed dataset" in result.stderr + result.stdout
    assert not list(tmp_path.rglob("summary.json"))


def test_no_config_sweep_or_readme_command_names_the_team_mirror():
    # A user's clone has no ../shared: presets name hub datasets.
    named = [str(path) for folder in ("conf", "sweeps") for path in (PROJECT_ROOT / folder).rglob("*.yaml")
             if "../shared" in path.read_text() or "shared/data" in path.read_text()]  # fmt: skip
    assert not named
    assert not [command for command in readme_commands() if "shared" in command]
