"""Peak memory of one training step: full fine-tuning with a reference model, with cached reference
log-probs, and with LoRA (the reference is the adapter-off base), on the same model.

    python -m bench.memory                       # hidden 512, 8 layers, vocab 32000, CPU
    python -m bench.memory --hidden 1024 --layers 16 --repeats 5

Each configuration runs in a fresh subprocess (its peak RSS is its own); the figures are medians
over --repeats subprocesses. The reference cache is emulated: reference log-probs go into the
batch as `ref_logps`, exactly where a precomputed cache puts them, so no reference model loads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
CONFIGURATIONS = {
    "full + reference model": {"lora": None, "cached": False},
    "full + cached ref_logps": {"lora": None, "cached": True},
    "LoRA r16, adapter-off ref": {"lora": LORA, "cached": False},
}


def rss_mib() -> float:
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def save_model(directory: str, args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from dpo_exp.models.tokenizer import build_char_tokenizer

    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 64,
        max_position_embeddings=args.seq_len,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    build_char_tokenizer().save_pretrained(directory)


def worker(name: str, model_dir: str, args: argparse.Namespace) -> dict[str, float]:
    """Load, then run --steps optimiser steps of the real module's paired step; report memory."""
    import torch
    from omegaconf import OmegaConf

    from dpo_exp.models.loading import load_policy, load_reference, load_tokenizer
    from dpo_exp.training.module import PreferenceModule

    torch.set_num_threads(args.threads)
    setting = CONFIGURATIONS[name]
    model_cfg = OmegaConf.create(
        {"path": model_dir, "dtype": "float32", "lora": setting["lora"], "ref_path": None, "ref_dtype": None}
    )
    baseline = rss_mib()
    tokenizer = load_tokenizer(model_cfg)
    policy = load_policy(model_cfg, tokenizer)
    reference = None if setting["cached"] else load_reference(model_cfg, policy)
    module = PreferenceModule(policy, reference, loss="dpo", beta=0.1, loss_options={}, optim={}).train()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)

    rows = 2 * args.batch_pairs  # chosen ‖ rejected
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, args.vocab, (rows, args.seq_len), generator=generator)
    labels = input_ids.clone()
    labels[:, : args.seq_len // 2] = -100  # the first half is the prompt
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    if setting["cached"]:
        batch["ref_logps"] = torch.randn(rows) - 100.0  # where a precomputed cache puts them

    step_seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        _, output, _ = module._paired_step(batch)
        output.loss.mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_seconds.append(time.perf_counter() - start)
    return {
        "baseline_mib": baseline,
        "peak_mib": peak_rss_mib(),
        "trainable_m": sum(p.numel() for p in trainable) / 1e6,
        "total_m": sum(p.numel() for p in policy.parameters()) / 1e6,
        "step_s": statistics.median(step_seconds),
    }


def measure(name: str, model_dir: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.memory", "--worker", name, "--model-dir", model_dir]
    command += forwarded(args)
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def forwarded(args: argparse.Namespace) -> list[str]:
    names = ("hidden", "layers", "vocab", "seq_len", "batch_pairs", "steps", "threads")
    return [item for name in names for item in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-pairs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model_dir, args)))
        return
    with tempfile.TemporaryDirectory() as model_dir:
        save_model(model_dir, args)
        results = {
            name: [measure(name, model_dir, args) for _ in range(args.repeats)] for name in CONFIGURATIONS
        }
    print(
        f"Llama hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; "
        f"{args.batch_pairs} pairs × {args.seq_len} tokens; {args.steps} AdamW steps; "
        f"medians of {args.repeats} fresh processes; peak RSS (process, CPU)"
    )
    print(
        f"{'configuration':<30} {'params M':>9} {'trainable M':>12} {'peak MiB':>9} "
        f"{'above import MiB':>17} {'vs full+ref':>12} {'step s':>7}"
    )
    reference_peak = None
    for name, runs in results.items():
        peak = statistics.median(run["peak_mib"] for run in runs)
        above = statistics.median(run["peak_mib"] - run["baseline_mib"] for run in runs)
        reference_peak = reference_peak or above
        print(
            f"{name:<30} {runs[0]['total_m']:>9.1f} {runs[0]['trainable_m']:>12.2f} {peak:>9.0f} "
            f"{above:>17.0f} {above / reference_peak:>12.2f} "
            f"{statistics.median(run['step_s'] for run in runs):>7.2f}"
        )


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
