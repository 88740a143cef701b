"""Shared fixtures: an offline character tokenizer and tiny models saved locally. No network."""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import tempfile

# Set before transformers, datasets or wandb are imported by any test module. The datasets cache
# is the session's own (inherited by the CLI runs): nothing is left in the user's cache, and no
# hub dataset is cached from an earlier session.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="dpo_exp-tests-datasets-")
atexit.register(shutil.rmtree, os.environ["HF_DATASETS_CACHE"], ignore_errors=True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    Qwen2Config,
    RobertaConfig,
)

from dpo_exp.models.tokenizer import build_char_tokenizer  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The preference fixtures the project ships: one dataset repository, a config per format.
PREFERENCES = PROJECT_ROOT / "tests" / "fixtures" / "preferences"
# Hand-written demonstrations for SFT (`data=demonstrations`): text and chat rows.
DEMONSTRATIONS = PROJECT_ROOT / "tests" / "fixtures" / "demonstrations" / "train.jsonl"
# The team's offline mirror of real data: tests marked `real_data` read it, and skip without it.
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
NO_MIRROR = f"needs the offline data mirror at {SHARED_DATA} (absent in a plain clone)"

# Where each mirror file sits in its hub repository (Anthropic/hh-rlhf, openai/gsm8k).
HH_LAYOUT = {
    "helpful-base/train.jsonl.gz": "hh_helpful_base.train.jsonl.gz",
    "helpful-base/test.jsonl.gz": "hh_helpful_base.test.jsonl.gz",
    "harmless-base/train.jsonl.gz": "hh_harmless_base.train.jsonl.gz",
    "harmless-base/test.jsonl.gz": "hh_harmless_base.test.jsonl.gz",
    "helpful-rejection-sampled/test.jsonl.gz": "hh_helpful_rejection_sampled.extra.jsonl.gz",
}
GSM8K_LAYOUT = {"main/train.jsonl": "gsm8k.train.jsonl", "main/test.jsonl": "gsm8k.test.jsonl"}
GSM8K_CARD = """---
configs:
- config_name: main
  data_files:
  - split: train
    path: main/train.jsonl
  - split: test
    path: main/test.jsonl
---
"""


E2E = PROJECT_ROOT / "tests" / "e2e"


def pytest_configure(config):
    """The fast tier by default: a bare `pytest` leaves out the tests marked `slow` (the
    end-to-end tier, `pytest -m slow`). A `-m` of the caller's, or a folder, file or test named
    on the command line, runs what was asked for."""
    marked = any(arg.startswith(("-m", "--markexpr")) for arg in config.invocation_params.args)
    named = config.args_source == pytest.Config.ArgsSource.ARGS
    if not marked and not named:
        config.option.markexpr = "not slow"


@pytest.hookimpl(tryfirst=True)  # the marks are added before `-m` deselects by them
def pytest_collection_modifyitems(config, items):
    for item in items:  # the end-to-end tier is its folder: no module of it can miss the mark
        if E2E in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=NO_MIRROR)
    for item in items:
        if "real_data" in item.keywords:
            item.add_marker(skip)


def dataset_repository(folder: Path, layout: dict[str, str], source: Path, card: str = "") -> Path:
    """`folder` laid out as a hub dataset repository: each file of `layout` linked from `source`."""
    for inside, name in layout.items():
        (folder / inside).parent.mkdir(parents=True, exist_ok=True)
        (folder / inside).symlink_to(source / name)
    if card:
        (folder / "README.md").write_text(card)
    return folder


@pytest.fixture(scope="session")
def hh_rlhf_repo(tmp_path_factory) -> Path:
    """The mirror's HH-RLHF files laid out as the Anthropic/hh-rlhf repository (`data_dir`s)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(NO_MIRROR)
    return dataset_repository(tmp_path_factory.mktemp("hh-rlhf"), HH_LAYOUT, SHARED_DATA)


@pytest.fixture(scope="session")
def gsm8k_repo(tmp_path_factory) -> Path:
    """The mirror's GSM8K files laid out as the openai/gsm8k repository (subset `main`)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(NO_MIRROR)
    return dataset_repository(tmp_path_factory.mktemp("gsm8k"), GSM8K_LAYOUT, SHARED_DATA, GSM8K_CARD)


@pytest.fixture(scope="session")
def hh_fixture_repo(tmp_path_factory) -> Path:
    """The shipped HH-RLHF transcripts (`implicit_text`) laid out as Anthropic/hh-rlhf's
    helpful-base and harmless-base: the HH presets without the mirror."""
    layout = {
        f"{data_dir}/{split}.jsonl.gz": f"{split}.jsonl.gz"
        for data_dir in ("helpful-base", "harmless-base")
        for split in ("train", "test")
    }
    return dataset_repository(tmp_path_factory.mktemp("hh-fixture"), layout, PREFERENCES / "implicit_text")


@pytest.fixture(scope="session")
def char_tokenizer():
    return build_char_tokenizer()


def tiny_llama_config(tokenizer, **overrides) -> LlamaConfig:
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, char_tokenizer) -> Path:
    """A tiny Llama and its tokenizer saved with save_pretrained, loadable by path."""
    directory = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(char_tokenizer))
    model.save_pretrained(directory)
    char_tokenizer.save_pretrained(directory)
    return directory


# -- one tiny model of each supported family ---------------------------------------------------


def family_config(family: str, tokenizer):
    special = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if family == "llama":
        return tiny_llama_config(tokenizer)
    if family == "qwen2":
        return Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **special,
        )
    if family == "gpt2":  # dropout 0.1 everywhere, as in the released GPT-2
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **special)
    if family == "pythia":
        return GPTNeoXConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
            **special,
        )
    raise ValueError(family)


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory, char_tokenizer) -> dict[str, Path]:
    """A tiny model of each family and the character tokenizer, saved with save_pretrained."""
    directories = {}
    for family in ("llama", "qwen2", "gpt2", "pythia"):
        directory = tmp_path_factory.mktemp(f"tiny_{family}")
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(family_config(family, char_tokenizer)).save_pretrained(directory)
        char_tokenizer.save_pretrained(directory)
        directories[family] = directory
    return directories


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, char_tokenizer) -> Path:
    """A tiny RoBERTa sentiment classifier (NEGATIVE, POSITIVE) and its tokenizer, loadable by path:
    the shape of the DPO paper's IMDb reward, siebert/sentiment-roberta-large-english."""
    directory = tmp_path_factory.mktemp("tiny_roberta_classifier")
    config = RobertaConfig(
        vocab_size=len(char_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=130,
        type_vocab_size=1,
        pad_token_id=char_tokenizer.pad_token_id,
        bos_token_id=char_tokenizer.bos_token_id,
        eos_token_id=char_tokenizer.eos_token_id,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    tokenizer = copy.deepcopy(char_tokenizer)
    tokenizer.chat_template = None  # a classifier of plain text, as sentiment models ship
    tokenizer.save_pretrained(directory)
    return directory
