"""Typed schemas of the config sections this project owns, and which of them a run uses.

Values come from the YAML under `conf/`; these dataclasses say what each section may hold and of
which type. `validate_config` merges every section onto its schema once, at the entry, so an
unknown key or a value of the wrong type stops the run with the key's dotted name. Sections that
pass through to a library (trainer -> lightning.Trainer, strategy, model.config -> transformers)
or are derived from code (loss options, from each loss function's signature) are checked there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

# The data source of the built-in experiment: pairs sampled from an SFT model on `task` and
# labelled by its verifier. Any other source is a fixed dataset read from files (or generated).
TASK_SOURCE = "task"


class PairMode(Enum):
    best_vs_worst = "best_vs_worst"
    all = "all"


class SampleBackend(Enum):
    hf = "hf"  # transformers' generate on the loaded model
    vllm = "vllm"  # vLLM's engine on the saved model folder (a CUDA GPU; the `vllm` extra)


class VllmDtype(Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class OnlineReference(Enum):
    sft = "sft"  # every round against the SFT model
    previous = "previous"  # each round against the policy it starts from


class EvalSplit(Enum):
    eval = "eval"  # held out: every reported figure
    tune = "tune"  # where presets are chosen


@dataclass
class DataSchema:
    name: str = MISSING
    source: str = MISSING
    # A dataset as `datasets.load_dataset` names it: a hub id, or a local folder laid out as its
    # repository; `subset` is its config name. Read when `train_path` is null.
    dataset: str | None = None
    revision: str | None = None  # a hub commit; a local folder has none (null)
    subset: str | None = None
    data_dir: str | None = None
    train_split: str = "train"
    validation_split: str | None = None  # null: the validation split is cut from train (val_size)
    # A local file read instead of `dataset` (and its validation file, else cut from it).
    train_path: str | None = None
    validation_path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    val_size: int = MISSING
    split_seed: int = MISSING
    shuffle: bool = MISSING
    max_length: int = MISSING
    max_prompt_length: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING


@dataclass
class SplitsSchema:
    eval: int = MISSING
    tune: int = MISSING
    sft: int = MISSING
    sample: int = MISSING
    sample_val: int = MISSING
    sft_check: int = MISSING


@dataclass
class TaskSchema:
    name: str = MISSING
    problems: str = MISSING  # module:function, (count, **options) -> list[Problem]
    options: dict[str, Any] = field(default_factory=dict)
    reward: str = MISSING  # module:function, (prompt, completion, answer) -> float; or a classifier
    reward_output: str = "logit:0"  # a classifier's score: logit:<i> or prob:<i or label>
    reward_revision: str | None = None  # a classifier's hub commit; null for a local folder
    pass_threshold: float = MISSING
    max_new_tokens: int = MISSING
    splits: SplitsSchema = field(default_factory=SplitsSchema)


@dataclass
class SftSchema:
    steps: int = MISSING  # the step cap, with a target; the step count, without
    target_reward: float | None = None  # stop once the sampled reward on sft_check prompts reaches it
    check_every: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    seed: int = MISSING
    warmup_steps: int = MISSING
    scheduler: str = MISSING


@dataclass
class SampleSchema:
    num_samples: int = MISSING
    temperature: float = MISSING
    top_p: float = MISSING
    pair_mode: PairMode = MISSING
    min_margin: float = 0.0
    batch_size: int = MISSING
    backend: SampleBackend = SampleBackend.hf
    vllm_dtype: VllmDtype | None = None  # null: the dtype the model folder was saved in
    vllm_gpu_memory_utilization: float = 0.8


@dataclass
class EvaluateSchema:
    split: EvalSplit = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    table_every: int = MISSING
    table_size: int = MISSING
    reward: str | None = None  # module:function or a classifier; on a task, null: task.reward
    reward_output: str = "logit:0"
    # A fixed dataset's generation-scored evaluation (with `reward`): its prompts and sampling.
    prompts: int = MISSING
    temperature: float = MISSING
    max_new_tokens: int = MISSING
    reward_revision: str | None = None


@dataclass
class OnlineSchema:
    rounds: int = MISSING
    reference: OnlineReference = MISSING


@dataclass
class OptimSchema:
    lr: float = MISSING
    weight_decay: float = MISSING
    betas: list[float] = MISSING
    eps: float = MISSING
    warmup_steps: int | None = MISSING
    warmup_ratio: float = MISSING
    scheduler: str = MISSING
    master_weights: bool = MISSING


@dataclass
class ReferenceSchema:
    cache: bool = MISSING
    cache_dir: str = MISSING
    sync_every: int | None = MISSING
    sync_mix: float = MISSING


@dataclass
class SpeedSchema:
    group_by_length: bool = MISSING
    head_on_completions: bool = MISSING
    share_prompt: bool = MISSING
    pack: bool = MISSING
    logits_chunk: int | None = MISSING
    peak_flops: float | None = MISSING
    tf32: bool = MISSING


@dataclass
class CheckpointSchema:
    every_n_steps: int = MISSING
    keep_last: int = MISSING


@dataclass
class ExportSchema:
    save: bool = MISSING
    lora: str = MISSING
    base_model: str | None = MISSING
    push_to_hub: str | None = MISSING


@dataclass
class LoggerSchema:
    name: str = MISSING
    project: str | None = None
    entity: str | None = None
    online: bool = False
    group: str | None = None
    tags: list[str] = field(default_factory=list)


# Section name -> schema, for the sections every run has.
RUN_SECTIONS: dict[str, type] = {
    "data": DataSchema,
    "optim": OptimSchema,
    "reference": ReferenceSchema,
    "speed": SpeedSchema,
    "checkpoint": CheckpointSchema,
    "export": ExportSchema,
    "logger": LoggerSchema,
}

# The built-in experiment's own sections, and what each does, for the message that refuses
# them when the data is a fixed dataset (which they cannot change).
EXPERIMENT_SECTIONS: dict[str, tuple[type | None, str]] = {
    "task": (TaskSchema, "defines the built-in experiment's problems and reward"),
    "sft": (
        SftSchema,
        "trains the built-in experiment's SFT model; a fixed dataset trains the model you named",
    ),
    "sample": (
        SampleSchema,
        "draws the samples that become the experiment's training data; nothing is sampled",
    ),
    "evaluate": (
        EvaluateSchema,
        "scores samples with the task's verifier; a fixed dataset has no verifier unless evaluate.reward "
        "names one",
    ),
    "online": (
        OnlineSchema,
        "resamples the training data from the current policy; there is nothing to resample",
    ),
    "cache_dir": (None, "holds the experiment's SFT and sample stages; none is built"),
}

# The `evaluate` keys a fixed dataset's generation-scored evaluation reads (with `evaluate.reward`);
# the others (`split`) choose among the built-in experiment's prompt sets.
FIXED_DATA_EVALUATE_KEYS = (
    "reward", "reward_output", "reward_revision", "prompts", "temperature", "max_new_tokens",
    "batch_size", "seed", "table_every", "table_size",
)  # fmt: skip
# Those only a fixed dataset reads: the built-in experiment's prompts, length and temperature are
# its task's (task.splits.eval, task.max_new_tokens; samples at temperature 1).
FIXED_DATA_ONLY_EVALUATE_KEYS = ("prompts", "temperature", "max_new_tokens")

# Top-level keys (not sections) with the types they must have.
TOP_LEVEL_KEYS = (
    "model", "data", "loss", "strategy", "trainer", "logger", "beta", "seed", "optim", "reference",
    "speed", "objective", "save_eval_logps", "nonfinite", "checkpoint", "resume", "export", "run_name",
    "output_root", "verbosity", *EXPERIMENT_SECTIONS,
)  # fmt: skip
