"""Every command the README and the docs/ pages print composes and validates, and they say what was
never run.

Each `python train.py` / `dpo-exp` line in the bash blocks of the README and of every page under
docs/ is composed with Hydra exactly as the shell would pass it (paths that stand for the reader's
own files replaced by real ones) and validated as the entry validates it (`dpo-exp evaluate`: on the
run folder it names, as that command composes and plans it); a list below says what each line must
train or evaluate on, and a line without an entry fails the test, so a new documented command needs
its check. test_readme_runs.py runs them for real, at a reduced size.
"""

# ruff: noqa: E501  (README command lines are kept whole, as the README prints them)
from __future__ import annotations

import itertools
import re

import pytest
import yaml
from hydra import compose, initialize_config_dir

from dpo_exp.cli import CONF_DIR, RETIRED_KEYS, check_retired_overrides
from dpo_exp.config import is_experiment, validate_config
from dpo_exp.config.evaluation import evaluation_plan, run_arguments, split_run_argument
from tests.conftest import PROJECT_ROOT
from tests.e2e.readme import PAGES, SWEEPS_DIR, arguments, is_hydra_command, readme_commands
from tests.helpers import train_py

HYDRA_COMMANDS = [command for command in readme_commands() if is_hydra_command(command)]

# What each command trains on: (data name, experiment or not). Placeholders of the reader's own
# files are replaced by real ones in `arguments`.
EXPECTED = {
    # README
    "python train.py": ("arithmetic", True),
    "python train.py -m model=hf model.path=/path/to/sft data=pairs data.train_path=prefs.jsonl loss=dpo,ipo,simpo beta=0.1,0.5 seed=0,1": (
        "pairs",
        False,
    ),
    "python train.py model=hf model.path=/path/to/sft data=pairs data.train_path=prefs.jsonl logger=wandb": (
        "pairs",
        False,
    ),
    "python train.py model=hf model.path=/path/to/sft data=pairs data.train_path=prefs.jsonl loss=ipo beta=0.1 resume=auto": (
        "pairs",
        False,
    ),
    # README and docs/
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
    "python train.py -m hydra/launcher=submitit_local data=synthetic beta=0.1,0.5": ("synthetic", False),
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
    # docs/evaluate.md: composed as `dpo-exp evaluate` composes (on a run's own groups) and planned
    "dpo-exp evaluate run=outputs/runs/<run name>/<time>-<hash>": ("pairs", False),
    "dpo-exp evaluate run=outputs/runs/<run name>/<time>-<hash>/checkpoints/step000200.ckpt": (
        "pairs",
        False,
    ),
    "dpo-exp evaluate run=<run folder> data.validation_path=heldout.jsonl": ("pairs", False),
    "dpo-exp evaluate model=hf model.path=<policy folder> model.ref_path=<base folder> data=pairs data.validation_path=heldout.jsonl loss=dpo beta=0.1": (
        "pairs",
        False,
    ),
    "dpo-exp evaluate model=hf model.path=<base> model.ref_path=<base> data=pairs data.validation_path=heldout.jsonl": (
        "pairs",
        False,
    ),
    "dpo-exp evaluate model=hf model.path=<policy folder> loss=simpo data=pairs data.validation_path=heldout.jsonl": (
        "pairs",
        False,
    ),
    # docs/sft_then_dpo.md
    "dpo-exp sft model=hf model.path=/path/to/base data=demonstrations data.train_path=demos.jsonl": (
        "demonstrations",
        False,
    ),
    "python train.py model=hf model.path=outputs/runs/<sft run>/<time>-<hash>/model data=pairs data.train_path=pairs.jsonl": (
        "pairs",
        False,
    ),
    # docs/reward_eval.md
    "python train.py data=pairs data.train_path=prefs.jsonl model=qwen2 evaluate.reward=siebert/sentiment-roberta-large-english evaluate.reward_output=prob:POSITIVE": (
        "pairs",
        False,
    ),
    "python train.py data=pairs data.train_path=prefs.jsonl evaluate.reward=my_module:score": (
        "pairs",
        False,
    ),
    # docs/prompt_tasks.md
    "python train.py --config-dir sweeps --config-name imdb_beta": ("imdb", True),
    "python train.py experiment=imdb_sentiment task.options.dataset=/data/imdb task.options.revision=null task.options.tokenizer=/models/gpt2-large task.options.tokenizer_revision=null model.path=/models/gpt2-large model.revision=null task.reward=/models/sentiment-roberta-large-english task.reward_revision=null": (
        "imdb",
        True,
    ),
}


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
    assert set(HYDRA_COMMANDS) == set(EXPECTED)


def compose_evaluation(words: list[str]) -> tuple:
    """`dpo-exp evaluate`'s config, composed as the command composes it (a run's own groups before
    the command line's) and checked by its plan: the config it evaluates with."""
    run, given = split_run_argument(words)
    overrides = given if run is None else run_arguments(run, given)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return evaluation_plan(cfg, overrides, run, given).cfg, given


@pytest.mark.parametrize("command", HYDRA_COMMANDS)
def test_a_readme_command_composes_validates_and_names_its_data(command, request):
    data_name, experiment = EXPECTED[command]
    evaluation = command.startswith("dpo-exp evaluate")
    # The evaluate commands name a run folder: a run of the README's, trained once for them.
    words = arguments(command, request.getfixturevalue("evaluated_run" if evaluation else "reader_files"))
    check_retired_overrides(words)
    for cfg, overrides in [compose_evaluation(words)] if evaluation else compose_command(words):
        if not evaluation:
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


# -- what the README describes but no run here has measured -------------------------------------

# QLoRA (a bitsandbytes 4-bit base), fp16 mixed precision, NCCL and vLLM need a CUDA GPU, which the
# machines these tests run on lack. `bf16-mixed`, which runs on a CPU, is no match.
NEEDS_A_GPU = re.compile(r"qlora|(?<![\w-])16-mixed|nccl|vllm", re.I)
NOT_RUN = "not run yet"


def places(text: str) -> list[str]:
    """Where a reader meets one statement: a paragraph, a list item, a table row, a code line."""
    found, in_code = [], False
    for line in text.splitlines():
        fence = line.startswith("```")
        in_code ^= fence
        if not found or fence or in_code or not line.strip() or re.match(r"(- |\||\d+\. |#)", line):
            found.append("")
        found[-1] += line + "\n"
    return [" ".join(place.split()) for place in found if place.strip()]  # a line break is a space


@pytest.mark.parametrize("path", list(PAGES))
def test_every_place_that_names_a_gpu_only_feature_says_it_was_not_run(path):
    named = [place for place in places(PAGES[path]) if NEEDS_A_GPU.search(place)]
    assert not [place for place in named if NOT_RUN not in place]


def test_the_gpu_only_features_are_named_where_a_reader_looks_for_them():
    # QLoRA in the models page, fp16 mixed precision in the precision page, NCCL with the DDP command
    # and the nodes, the file map's QLoRA rows: each a place that says it was not run yet.
    named = {
        path: [place for place in places(text) if NEEDS_A_GPU.search(place)] for path, text in PAGES.items()
    }
    assert any("qlora" in place.lower() for place in named["docs/models.md"])
    assert any("16-mixed" in place for place in named["docs/precision.md"])
    assert any("nccl" in place.lower() for place in named["docs/distributed.md"])
    assert any("vllm" in place.lower() for place in named["docs/precision.md"])
    assert any("sample.backend=vllm" in place for place in named["docs/prompt_tasks.md"])
    assert len(named["docs/architecture.md"]) >= 2
    assert sum(map(len, named.values())) >= 5
