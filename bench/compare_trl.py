"""dpo_exp against TRL's DPOTrainer, side by side, on the same tiny Llama, data and settings.

    python bench/compare_trl.py                 # single runs: tokens/s, peak memory, MFU; ratios last
    python bench/compare_trl.py --mode sweep    # a 4-point β sweep, total wall time each way
    python bench/compare_trl.py --lengths hh    # HH-like lengths: long prompts, short answers
    python bench/compare_trl.py --mode packing --lengths hh   # dpo_exp alone: packed rows, grouping

Both train a 4.2M-parameter Llama (hidden 256, intermediate 688, 4 layers, 4 heads, vocab 2000)
saved once with a word-level tokenizer, in fp32 with activation checkpointing off, 8 pairs per
step, prompts of 32-64 tokens and completions of 32-96 (+ EOS; `--lengths short`, the default) or
prompts of 96-192 and completions of 16-48 (`--lengths hh`), 2 torch threads. Every run is its
own process (so peak RSS is its own), and the variants alternate within each repeat so that
machine noise falls on all of them alike. Tokens are non-padding tokens of chosen and rejected
rows; time is the sum of training-step times (start-up, reference precomputation and validation
excluded; printed separately as wall time). MFU uses dpo_exp's FLOP count for both.
Needs the `bench` extra (trl).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREADS = os.environ.get("BENCH_THREADS", "2")  # torch threads of every worker
# How every worker's OpenMP threads wait, TRL's included, set in the environment (which dpo_exp's
# own choice defers to): by default a 10,000-iteration spin, what dpo_exp picks on a quiet CPU
# (dpo_exp/threads.py); BENCH_OMP_WAIT=PASSIVE or ACTIVE compares both sides under that policy.
OMP_WAIT = os.environ.get("BENCH_OMP_WAIT", "")
WAIT_ENV = {"OMP_WAIT_POLICY": OMP_WAIT} if OMP_WAIT else {"GOMP_SPINCOUNT": "10000"}
VOCAB = 2000
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
ROOT = Path(__file__).resolve().parent.parent


# -- shared set-up -----------------------------------------------------------------------------


# (prompt words, completion words, data.max_prompt_length) of each `--lengths`; rows stay under
# max_length=256 on both sides, so nothing is truncated.
LENGTHS = {"short": ((32, 64), (32, 96), 128), "hh": ((96, 192), (16, 48), 200)}


def build_model_and_data(directory: Path, *, train_pairs: int, lengths: str = "short", seed: int = 0) -> None:
    """The tiny Llama, its word-level tokenizer, and train/validation JSONL of random token words."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

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
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    rng = random.Random(seed)

    def text(low: int, high: int) -> str:
        return " ".join(f"t{rng.randrange(VOCAB - len(SPECIALS))}" for _ in range(rng.randint(low, high)))

    prompt, answer, _ = LENGTHS[lengths]
    for name, count in (("train", train_pairs), ("validation", 16)):
        with (directory / f"{name}.jsonl").open("w") as handle:
            for _ in range(count):
                prompt, answer, _ = LENGTHS[lengths]
                row = {
                    "prompt": text(*prompt),
                    "chosen": " " + text(*answer),
                    "rejected": " " + text(*answer),
                }
                handle.write(json.dumps(row) + "\n")


def child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS, TOKENIZERS_PARALLELISM="false")
    env.update(WAIT_ENV)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled", TQDM_DISABLE="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_child(args: list[str]) -> dict:
    """Run this script as a worker; its last stdout line is a JSON result."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, *args], env=child_env(), capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-5000:])
        raise SystemExit(f"worker {args} failed")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


# -- workers -----------------------------------------------------------------------------------


def trl_worker(directory: Path, *, steps: int, precompute: bool, beta: float, out: Path) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from dpo_exp.training.flops import ModelCosts
    from dpo_exp.training.telemetry import measure_matmul_peak, peak_memory_gb

    torch.set_num_threads(int(THREADS))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    costs = ModelCosts.of(model)
    data = load_dataset(
        "json",
        data_files=str(directory / "train.jsonl"),
        split="train",
        cache_dir=str(directory / "hf_cache"),
    )
    counts = {"on": False, "tokens": 0, "flops": 0.0, "seconds": 0.0}
    collate = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=256)

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
        per_device_train_batch_size=8,
        max_steps=steps,
        learning_rate=5e-4,
        beta=beta,
        max_length=256,
        precompute_ref_log_probs=precompute,
        precompute_ref_batch_size=16,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_steps=max(steps, 1),
        dataloader_drop_last=True,
        disable_tqdm=True,
        seed=0,
    )
    start = time.perf_counter()
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
        "wall_s": time.perf_counter() - start,
        "peak_gb": peak_memory_gb(),
        "peak_flops": measure_matmul_peak(),
    }


def trl_step_flops(costs, attention_mask, *, precompute: bool) -> float:
    """dpo_exp's counter (`ModelCosts`) on TRL's step: chosen and rejected rows padded to one
    width, full logits, the reference forward unless precomputed."""
    rows, width = attention_mask.shape
    shape = (rows * width, rows * width**2, rows * width)
    forward = costs.forward(*shape)
    return forward + costs.backward(*shape) + (0.0 if precompute else forward)


def dpo_exp_overrides(directory: Path, *, steps: int, lengths: str = "short") -> list[str]:
    return [
        "model=hf",
        f"model.path={directory}",
        "data=pairs",
        f"data.train_path={directory / 'train.jsonl'}",
        f"data.validation_path={directory / 'validation.jsonl'}",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        "data.max_length=256",
        f"data.max_prompt_length={LENGTHS[lengths][2]}",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps * 100}",
        f"trainer.log_every_n_steps={steps}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "optim.lr=5.0e-4",
        "export.save=false",  # TRL saves nothing either
    ]


def dpo_exp_worker(overrides: list[str], out: Path) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from dpo_exp.cli import CONF_DIR, run

    torch.set_num_threads(int(THREADS))
    start = time.perf_counter()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = run(cfg, out, overrides=overrides)
    return {
        "tokens": summary["tokens_per_s"] * summary["train_time_s"],
        "train_s": summary["train_time_s"],
        "flops": summary["mfu"] * summary["peak_flops"] * summary["train_time_s"],
        "peak_flops": summary["peak_flops"],
        "wall_s": time.perf_counter() - start,
        "peak_gb": summary["peak_memory_gb"],
        "padding": summary["padding_fraction"],
    }


# -- modes -------------------------------------------------------------------------------------


def versus_trl(directory: Path, base: list[str]) -> dict[str, list[str]]:
    """`--mode single`: TRL's two ways against dpo_exp's."""
    cache_dir = directory / "ref_cache"
    return {
        "trl default": ["trl", "--precompute", "0"],
        "trl precomputed": ["trl", "--precompute", "1"],
        "dpo_exp": ["dpo_exp", "--", *base],
        "dpo_exp cached": [
            "dpo_exp",
            "--",
            *base,
            "reference.cache=true",
            f"reference.cache_dir={cache_dir}",
        ],
        # Ablation: one padded row per sequence, the prompt computed twice (as TRL does).
        "dpo_exp 2 rows": ["dpo_exp", "--", *base, "speed.share_prompt=false"],
    }


def packing_against_grouping(directory: Path, base: list[str]) -> dict[str, list[str]]:
    """`--mode packing`: packed rows against length-grouped batches, with and without each."""
    return {
        "grouped": ["dpo_exp", "--", *base],
        "grouped packed": ["dpo_exp", "--", *base, "speed.pack=true"],
        "random": ["dpo_exp", "--", *base, "speed.group_by_length=false"],
        "random packed": ["dpo_exp", "--", *base, "speed.group_by_length=false", "speed.pack=true"],
    }


def single_mode(directory: Path, *, steps: int, repeats: int, lengths: str, packing: bool = False) -> None:
    base = [*dpo_exp_overrides(directory, steps=steps, lengths=lengths), "beta=0.1"]  # TRL's default β
    variants = (packing_against_grouping if packing else versus_trl)(directory, base)
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for repeat in range(repeats):
        for name, args in variants.items():
            out = Path(tempfile.mkdtemp(dir=directory))
            result = run_child(
                [
                    "--worker",
                    *args[:1],
                    "--dir",
                    str(directory),
                    "--steps",
                    str(steps),
                    "--out",
                    str(out),
                    *args[1:],
                ]
            )
            results[name].append(result)
            print(
                f"repeat {repeat} {name:<16} {result['tokens'] / result['train_s']:8.0f} tokens/s "
                f"peak {result['peak_gb']:.2f} GB  wall {result['wall_s']:.1f} s",
                flush=True,
            )
    summary = {name: _medians(runs) for name, runs in results.items()}
    print(f"\nmedians of {repeats} repeats, {steps} steps each (noise: min-max of tokens/s in brackets)")
    header = f"{'variant':<16} {'tokens/s':>9} {'range':>15} {'peak GB':>8} {'MFU':>6} {'padding':>8}"
    print(f"{header} {'wall s':>7}")
    for name, row in summary.items():
        padding = "-" if row["padding"] is None else f"{row['padding']:.1%}"
        print(
            f"{name:<16} {row['tokens_per_s']:9.0f} {row['range']:>15} {row['peak_gb']:8.2f} "
            f"{row['mfu']:6.1%} {padding:>8} {row['wall_s']:7.1f}"
        )
    if packing:
        return
    print("\nratios (tokens/s; peak memory)")
    for ours in ("dpo_exp", "dpo_exp cached"):
        for theirs in ("trl default", "trl precomputed"):
            speed = summary[ours]["tokens_per_s"] / summary[theirs]["tokens_per_s"]
            memory = summary[ours]["peak_gb"] / summary[theirs]["peak_gb"]
            print(f"{ours} / {theirs}: {speed:.2f}x tokens/s, {memory:.2f}x peak memory")


def _medians(runs: list[dict]) -> dict:
    speeds = [r["tokens"] / r["train_s"] for r in runs]
    return {
        "tokens_per_s": statistics.median(speeds),
        "range": f"[{min(speeds):.0f}-{max(speeds):.0f}]",
        "peak_gb": statistics.median(r["peak_gb"] for r in runs),
        "mfu": statistics.median(r["flops"] / r["train_s"] / r["peak_flops"] for r in runs),
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        # Of the rows dpo_exp runs; TRL's workers do not count theirs.
        "padding": statistics.median(r["padding"] for r in runs) if "padding" in runs[0] else None,
    }


def sweep_mode(directory: Path, *, steps: int, repeats: int, betas: list[float]) -> None:
    """TRL: one process per β with precomputed reference log-probs (reused through its datasets
    cache); dpo_exp: one Hydra multirun with the reference cache. Total process time each."""
    trl_times, ours_times = [], []
    for repeat in range(repeats):
        trial = Path(tempfile.mkdtemp(dir=directory))
        start = time.perf_counter()
        for beta in betas:
            run_child(
                [
                    "--worker",
                    "trl",
                    "--dir",
                    str(directory),
                    "--steps",
                    str(steps),
                    "--out",
                    str(trial / f"trl{beta}"),
                    "--precompute",
                    "1",
                    "--beta",
                    str(beta),
                ]
            )
        trl_times.append(time.perf_counter() - start)
        overrides = dpo_exp_overrides(directory, steps=steps)
        start = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "train.py"),
                "-m",
                f"beta={','.join(map(str, betas))}",
                "reference.cache=true",
                f"reference.cache_dir={trial / 'ref_cache'}",
                f"output_root={trial / 'outputs'}",
                *overrides,
            ],
            env=child_env(),
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-5000:])
            raise SystemExit("dpo_exp sweep failed")
        ours_times.append(time.perf_counter() - start)
        print(f"repeat {repeat}: trl {trl_times[-1]:.1f} s, dpo_exp {ours_times[-1]:.1f} s", flush=True)
    trl, ours = statistics.median(trl_times), statistics.median(ours_times)
    print(f"\n{len(betas)}-point β sweep, {steps} steps per run, medians of {repeats}:")
    print(f"trl (precomputed, one process per β): {trl:.1f} s  [{min(trl_times):.1f}-{max(trl_times):.1f}]")
    print(
        f"dpo_exp (one multirun, cached reference): {ours:.1f} s  "
        f"[{min(ours_times):.1f}-{max(ours_times):.1f}]"
    )
    print(f"ratio dpo_exp / trl: {ours / trl:.2f}x time")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["single", "sweep", "packing"], default="single")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lengths", choices=sorted(LENGTHS), default="short")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--worker", choices=["trl", "dpo_exp"], help=argparse.SUPPRESS)
    parser.add_argument("--precompute", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--beta", type=float, default=0.1, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "trl":
        result = trl_worker(
            args.dir, steps=args.steps, precompute=bool(args.precompute), beta=args.beta, out=args.out
        )
        print(json.dumps(result))
        return
    if args.worker == "dpo_exp":
        print(json.dumps(dpo_exp_worker(args.overrides, args.out)))
        return
    directory = args.dir or Path(tempfile.mkdtemp(prefix="dpo_exp_bench_"))
    directory.mkdir(parents=True, exist_ok=True)
    build_model_and_data(directory, train_pairs=max(8 * args.steps, 64), lengths=args.lengths)
    print(f"work folder: {directory}", flush=True)
    if args.mode in ("single", "packing"):
        packing = args.mode == "packing"
        single_mode(directory, steps=args.steps, repeats=args.repeats, lengths=args.lengths, packing=packing)
    else:
        sweep_mode(directory, steps=args.steps, repeats=args.repeats, betas=[0.01, 0.1, 0.3, 1.0])


if __name__ == "__main__":
    main()
