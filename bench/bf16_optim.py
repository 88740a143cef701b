"""Which optimizer keeps small updates of bf16 weights: AdamW on the bf16 weights as they are, on fp32
master copies (`MasterWeightAdamW`), or with stochastic rounding (torchao's `_AdamW`,
`bf16_stochastic_round=True`; `pip install -e ".[bench]"`), against AdamW on fp32 weights.

    python -m bench.bf16_optim                  # a tiny model (hidden 32) and hidden 512, 1 thread
    python -m bench.bf16_optim --sizes 32 --threads 2

Per model size and optimizer, in a fresh subprocess (its peak RSS is its own): the fraction of the
weights the optimizer holds (the masters, where it keeps them) that 4 steps at lr 5e-7 change; the
loss over 20 steps at a higher lr on one fixed batch (next-token cross-entropy), and its largest
gap to fp32's; the first step's time (torchao compiles its step there) and the median of the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
METHODS = ("fp32", "bf16", "bf16+master", "bf16+stochastic")
# hidden -> (layers, vocab, initializer_range, higher lr): the tests' tiny model and a middling one.
SIZES = {32: (2, 64, 0.08, 1e-3), 512: (4, 8000, 0.02, 1e-4)}


def build_model(hidden: int, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    layers, vocab, init, _ = SIZES[hidden]
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, initializer_range=init, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(dtype)


def build_optimizer(method: str, params, lr: float):
    import torch

    from dpo_exp.training.master_weights import MasterWeightAdamW

    options = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    if method == "bf16+master":
        return MasterWeightAdamW(params, lr=lr, fused=True, **options)
    if method == "bf16+stochastic":
        from torchao.optim import _AdamW

        return _AdamW(params, lr=lr, bf16_stochastic_round=True, **options)
    return torch.optim.AdamW(params, lr=lr, fused=True, **options)


def held_weights(optimizer, params):
    """The weights the optimizer steps: its fp32 masters where it keeps them, else the parameters."""
    master = getattr(optimizer, "master", None)
    return [(master(p) if master else p).detach().float().clone() for p in params]


def train(method: str, hidden: int, lr: float, steps: int) -> dict:
    import torch

    model = build_model(hidden, torch.float32 if method == "fp32" else torch.bfloat16)
    params = list(model.parameters())
    optimizer = build_optimizer(method, params, lr)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (4, 64), generator=generator)
    before = [p.detach().float().clone() for p in params]
    losses, times = [], []
    for _ in range(steps):
        start = time.perf_counter()
        logits = model(input_ids=ids).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    after = held_weights(optimizer, params)
    changed = sum(int((a != b).sum()) for a, b in zip(after, before, strict=True))
    total = sum(b.numel() for b in before)
    return {"losses": losses, "times": times, "changed": changed / total, "params": total}


def measure(method: str, hidden: int) -> dict:
    """One subprocess's figures: the small-lr run, then the higher-lr run."""
    small = train(method, hidden, 5e-7, 4)
    high = train(method, hidden, SIZES[hidden][3], 20)
    return {
        "changed_4_steps_lr5e-7": small["changed"],
        "params": small["params"],
        "losses": high["losses"],
        "first_step_s": small["times"][0],
        "step_s": statistics.median(high["times"][1:]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(method: str, hidden: int, threads: int) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "TORCHINDUCTOR_COMPILE_THREADS": "1"}
    command = [sys.executable, "-m", "bench.bf16_optim", "--child", method, "--sizes", str(hidden)]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(hidden: int, results: dict[str, dict]) -> None:
    reference = results["fp32"]["losses"]
    print(
        f"\nhidden {hidden}, {results['fp32']['params']:,} parameters, lr {SIZES[hidden][3]:g} for the loss"
    )
    columns = ["optimizer", "changed, 4 steps at 5e-7", "loss 0 -> 19", "max gap to fp32", "first step s",
               "step s", "peak RSS MiB"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|")
    for method, r in results.items():
        if "error" in r:
            print(f"| {method} | failed: {r['error']} |")
            continue
        gap = max(abs(a - b) for a, b in zip(r["losses"], reference, strict=True))
        print(
            f"| {method} | {r['changed_4_steps_lr5e-7']:.2%} | {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f} "
            f"| {gap:.3f} | {r['first_step_s']:.2f} | {r['step_s']:.3f} | {r['peak_rss_mib']:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(SIZES), choices=sorted(SIZES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        print(json.dumps(measure(args.child, args.sizes[0])))
        return
    for hidden in args.sizes:
        report(hidden, {method: run_child(method, hidden, args.threads) for method in METHODS})


if __name__ == "__main__":
    main()
