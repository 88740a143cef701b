"""dpo_exp against TRL's DPOTrainer at real size: Qwen2.5-0.5B's shape, a few optimizer steps.

    python bench/scale.py                          # HH-like lengths, 3 steps, fp32, every variant
    python bench/scale.py --lengths short --steps 3
    python bench/scale.py --variants dpo_exp "trl default"
    python bench/scale.py --precision bf16-mixed  # on a CUDA GPU where there is one (TRL's bf16)
    python bench/scale.py --precision bf16-true   # bf16 weights on both sides

The model has Qwen2.5-0.5B's shape (24 layers, hidden 896, intermediate 4864, 14 query and 2
key/value heads, q/k/v biases, vocabulary 151,936, tied embeddings: 494M parameters) as a Llama
config with random weights, saved once with a word-level tokenizer of that vocabulary (a Llama
config, so that every loader reads the saved tokenizer). Pairs are random words: `hh` lengths
(prompts 128-384 tokens, answers 16-64: long prompts, short answers) or `short` ones (prompts
16-48, answers 48-128). Both sides: 2 pairs per step, AdamW, the same β and lr, 2 torch threads,
`OMP_WAIT_POLICY` as the environment or the package sets it, every run its own process.

Printed per variant: tokens/s (non-padding chosen and rejected tokens over the summed step times),
the process's peak RSS, and MFU by dpo_exp's tested FLOP counter (`training/flops.py`, TRL's step
counted as it runs: padded rows, the LM head on every position) over the matmul peak measured in
the same process; then each dpo_exp variant's ratios to each TRL one. Needs the `bench` extra.
Both sides train on a CUDA GPU where there is one, in `--precision` (fp32 by default).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compare_trl import ROOT, SPECIALS, child_env, trl_step_flops

VOCAB = 151_936
LENGTHS = {"hh": ((128, 384), (16, 64)), "short": ((16, 48), (48, 128))}
PAIRS_PER_STEP = 2
MAX_LENGTH = 512  # longer than any row: nothing is truncated on either side
LR, BETA = 5e-7, 0.1
# dpo_exp's trainer.precision; TRL's: fp32 weights (bf16=False), fp32 weights under autocast
# (bf16=True), bf16 weights (loaded in bf16, bf16=False: the optimizer steps them directly).
PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")

# dpo_exp overrides and TRL DPOConfig settings of each variant. TRL's defaults include
# gradient checkpointing and bf16; this CPU has no bf16 matrix units, so every run is fp32.
VARIANTS: dict[str, tuple[str, dict | list[str]]] = {
    "trl default": ("trl", {"gradient_checkpointing": True}),
    "trl no checkpointing": ("trl", {"gradient_checkpointing": False}),
    "trl precomputed": ("trl", {"gradient_checkpointing": True, "precompute_ref_log_probs": True}),
    "dpo_exp": ("dpo_exp", []),
    "dpo_exp checkpointing": ("dpo_exp", ["model.activation_checkpointing=true"]),
    "dpo_exp cached": ("dpo_exp", ["reference.cache=true"]),
    "dpo_exp cached checkpointing": (
        "dpo_exp",
        ["reference.cache=true", "model.activation_checkpointing=true"],
    ),
    "dpo_exp no logit chunks": ("dpo_exp", ["speed.logits_chunk=null"]),
    "dpo_exp no master weights": ("dpo_exp", ["optim.master_weights=false"]),  # bf16 weights only
    "dpo_exp logit chunks of 256": ("dpo_exp", ["speed.logits_chunk=256"]),
    "trl, malloc as dpo_exp sets it": ("trl", {"gradient_checkpointing": True}),
    "dpo_exp, glibc's malloc defaults": ("dpo_exp", []),
}
# dpo_exp has glibc keep freed memory (`runtime.keep_freed_memory`) unless GLIBC_TUNABLES is set:
# the same settings given to TRL through the environment, and a tunable at its default value
# (tcache_count=7) that leaves dpo_exp's malloc as glibc's.
VARIANT_ENV = {
    "trl, malloc as dpo_exp sets it": {
        "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
    },
    "dpo_exp, glibc's malloc defaults": {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"},
}


def build_model_and_data(directory: Path, *, lengths: str, pairs: int, seed: int = 0) -> None:
    """The 0.5B-shaped model (random weights), its tokenizer, and train/validation JSONL."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    if not (directory / "model.safetensors").exists():
        words = SPECIALS + [f"t{i}" for i in range(VOCAB - len(SPECIALS))]
        backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
        tokenizer.save_pretrained(directory)
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            attention_bias=True,  # Qwen2's q/k/v biases (and an o bias Qwen2 lacks: 896 more weights)
            max_position_embeddings=4096,
            rope_theta=1_000_000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    (prompt_low, prompt_high), (answer_low, answer_high) = LENGTHS[lengths]
    rng = random.Random(seed)

    def text(low: int, high: int) -> str:
        return " ".join(f"t{rng.randrange(VOCAB - len(SPECIALS))}" for _ in range(rng.randint(low, high)))

    for name, count in (("train", pairs), ("validation", 2)):
        with (directory / f"{lengths}_{name}.jsonl").open("w") as handle:
            for _ in range(count):
                row = {
                    "prompt": text(prompt_low, prompt_high),
                    "chosen": " " + text(answer_low, answer_high),
                    "rejected": " " + text(answer_low, answer_high),
                }
                handle.write(json.dumps(row) + "\n")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def matmul_peak(precision: str) -> float:
    """The matmul peak a TRL step is measured against: on the GPU the step runs on, in its precision."""
    import torch

    from dpo_exp.training.telemetry import measure_matmul_peak

    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    return measure_matmul_peak(dtype=dtype, device="cuda" if torch.cuda.is_available() else "cpu")


# -- workers -----------------------------------------------------------------------------------


def trl_worker(
    directory: Path, lengths: str, steps: int, settings: dict, out: Path, precision: str = "32-true"
) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from dpo_exp.training.flops import ModelCosts

    tokenizer = AutoTokenizer.from_pretrained(directory)
    dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    costs = ModelCosts.of(model)
    data = load_dataset(
        "json",
        data_files=str(directory / f"{lengths}_train.jsonl"),
        split="train",
        cache_dir=str(out / "hf_cache"),
    )
    counts = {"on": False, "tokens": 0, "flops": 0.0, "seconds": 0.0}
    collate = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=MAX_LENGTH)
    precompute = bool(settings.get("precompute_ref_log_probs", False))

    def counting_collate(examples: list) -> dict:
        batch = collate(examples)
        if counts["on"]:
            counts["tokens"] += int(batch["attention_mask"].sum())
            counts["flops"] += trl_step_flops(costs, batch["attention_mask"], precompute=precompute)
        return batch

    class StepTimer(TrainerCallback):
        def on_train_begin(self, *args, **kwargs):
            counts["on"] = True

        def on_step_begin(self, *args, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            counts["seconds"] += time.perf_counter() - self.start

    config = DPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=PAIRS_PER_STEP,
        max_steps=steps,
        learning_rate=LR,
        beta=BETA,
        max_length=MAX_LENGTH,
        use_cpu=not torch.cuda.is_available(),
        bf16=precision == "bf16-mixed",  # autocast over fp32 weights, as dpo_exp's bf16-mixed
        report_to=[],
        save_strategy="no",
        logging_steps=steps,
        dataloader_drop_last=True,
        disable_tqdm=True,
        seed=0,
        **settings,
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=data,
        processing_class=tokenizer,
        data_collator=counting_collate,
        callbacks=[StepTimer()],
    )
    trainer.train()
    return {
        "tokens": counts["tokens"],
        "train_s": counts["seconds"],
        "flops": counts["flops"],
        "peak_flops": matmul_peak(precision),
    }


def dpo_exp_worker(
    directory: Path, lengths: str, steps: int, overrides: list[str], out: Path, precision: str = "32-true"
) -> dict:
    from hydra import compose, initialize_config_dir

    from dpo_exp.cli import CONF_DIR, run

    overrides = [
        "model=hf",
        f"model.path={directory}",
        "data=pairs",
        f"data.train_path={directory / f'{lengths}_train.jsonl'}",
        f"data.validation_path={directory / f'{lengths}_validation.jsonl'}",
        f"data.batch_size={PAIRS_PER_STEP}",
        f"data.eval_batch_size={PAIRS_PER_STEP}",
        f"data.max_length={MAX_LENGTH}",
        f"data.max_prompt_length={MAX_LENGTH - 64}",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"trainer.log_every_n_steps={steps}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.enable_checkpointing=false",
        f"optim.lr={LR}",
        f"beta={BETA}",
        "export.save=false",  # TRL saves nothing either
        f"trainer.precision={precision}",
        *overrides,
    ]
    if "reference.cache=true" in overrides:
        overrides.append(f"reference.cache_dir={out / 'ref_cache'}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = run(cfg, out / "run", overrides=overrides)
    return {
        "tokens": summary["tokens"],
        "train_s": summary["train_time_s"],
        "flops": summary["mfu"] * summary["peak_flops"] * summary["train_time_s"],
        "peak_flops": summary["peak_flops"],
        "step_zero": summary["step_zero"],
    }


def variant_command(
    directory: Path, lengths: str, steps: int, name: str, precision: str = "32-true"
) -> list[str]:
    """The command line of one variant's worker process, which writes under a new folder of
    `directory` and prints a JSON result as its last stdout line; its environment is `variant_env`."""
    out = Path(tempfile.mkdtemp(dir=directory))
    arguments = ["--worker", name, "--dir", str(directory), "--lengths", lengths, "--steps", str(steps)]
    return [sys.executable, __file__, *arguments, "--precision", precision, "--out", str(out)]


def variant_env(name: str) -> dict[str, str]:
    return {**child_env(), **VARIANT_ENV.get(name, {})}


def run_variant(directory: Path, lengths: str, steps: int, name: str, precision: str = "32-true") -> dict:
    """One variant in its own process; its last stdout line is a JSON result."""
    start = time.perf_counter()
    done = subprocess.run(
        variant_command(directory, lengths, steps, name, precision),
        env=variant_env(name),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-5000:])
        raise SystemExit(f"{name} failed")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def report(results: dict[str, list[dict]], *, lengths: str, steps: int) -> None:
    rows = {}
    for name, runs in results.items():
        speeds = [r["tokens"] / r["train_s"] for r in runs]
        rows[name] = {
            "tokens_per_s": statistics.median(speeds),
            "range": f"{min(speeds):.0f}-{max(speeds):.0f}",
            "peak_gb": statistics.median([r["peak_rss_gb"] for r in runs]),
            "mfu": statistics.median([r["flops"] / r["train_s"] / r["peak_flops"] for r in runs]),
            "peak_gflops": statistics.median([r["peak_flops"] / 1e9 for r in runs]),
            "process_s": statistics.median([r["process_s"] for r in runs]),
        }
    print(f"\n{lengths} lengths, {steps} steps of {PAIRS_PER_STEP} pairs, medians of {len(runs)}:")
    print("| variant | tokens/s [range] | peak RSS | MFU | matmul peak | process |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['tokens_per_s']:.0f} [{row['range']}] | {row['peak_gb']:.2f} GB | "
            f"{row['mfu']:.1%} | {row['peak_gflops']:.0f} GFLOP/s | {row['process_s']:.0f} s |"
        )
    ours = [name for name in rows if name.startswith("dpo_exp")]
    theirs = [name for name in rows if name.startswith("trl")]
    for mine in ours:
        for other in theirs:
            speed = rows[mine]["tokens_per_s"] / rows[other]["tokens_per_s"]
            memory = rows[mine]["peak_gb"] / rows[other]["peak_gb"]
            print(f"{mine} / {other}: {speed:.2f}x tokens/s, {memory:.2f}x peak RSS")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", choices=sorted(LENGTHS), default="hh")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--precision", choices=PRECISIONS, default="32-true")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--dir", type=Path, default=None, help="work folder; the model is built once in it")
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        from dpo_exp.training.telemetry import peak_memory_gb

        kind, settings = VARIANTS[args.worker]
        worker = trl_worker if kind == "trl" else dpo_exp_worker
        result = worker(args.dir, args.lengths, args.steps, settings, args.out, args.precision)
        # peak_memory_gb: the GPU's peak allocation where the worker ran on one, else the peak RSS
        print(json.dumps({**result, "peak_rss_gb": peak_rss_gb(), "peak_memory_gb": peak_memory_gb()}))
        return
    directory = args.dir or Path(tempfile.mkdtemp(prefix="dpo_exp_scale_"))
    directory.mkdir(parents=True, exist_ok=True)
    build_model_and_data(directory, lengths=args.lengths, pairs=PAIRS_PER_STEP * args.steps)
    print(f"work folder: {directory}", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in args.variants}
    for repeat in range(args.repeats):
        for name in args.variants:  # alternating, so machine noise falls on every variant alike
            result = run_variant(directory, args.lengths, args.steps, name, args.precision)
            results[name].append(result)
            print(
                f"repeat {repeat} {name:<30} {result['tokens'] / result['train_s']:7.0f} tokens/s "
                f"{result['peak_rss_gb']:6.2f} GB  {result['process_s']:5.0f} s",
                flush=True,
            )
    report(results, lengths=args.lengths, steps=args.steps)


if __name__ == "__main__":
    main()
