"""How torch's OpenMP threads should wait, on a quiet CPU and on a shared one.

    python bench/threads.py                       # every policy, quiet and beside a copy, 2 repeats
    python bench/threads.py --steps 60 --repeats 3

The workload is a training step of a small Llama (hidden 256, 4 layers, vocabulary 2000; 8 rows
of 96 tokens, forward, backward and AdamW), the size of the project's own tests and default job,
where parallel regions are short and waits between them frequent. Each policy runs it in a fresh
process (the OpenMP runtime reads its settings when it starts):
- quiet: alone on the machine;
- beside a copy: two processes at once with the same policy and thread count (two members of a
  parallel sweep, or two users): the time printed is the slower one's;
- beside a later copy: the same, the second started 3 s after the first, while the first trains
  (a job started on a machine already busy; dpo_exp's choice then differs between the two).
Policies are libgomp's (torch's CPU wheels ship it): `OMP_WAIT_POLICY=PASSIVE` (sleep at once),
`ACTIVE` (spin until work comes), and the default with a bounded spin, `GOMP_SPINCOUNT=N`
iterations (libgomp's default 300,000, cut to 1,000 when threads outnumber CPUs), then sleep;
and dpo_exp's own choice, made when the package is imported (`dpo_exp/threads.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

POLICIES = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "spin 10k": {"GOMP_SPINCOUNT": "10000"},
    "spin 100k": {"GOMP_SPINCOUNT": "100000"},
    "libgomp default (spin 300k)": {},
    "dpo_exp's choice": {},  # the worker imports dpo_exp before torch, with no setting in the environment
}
PACKAGE_CHOICE = "dpo_exp's choice"


def worker(steps: int, *, package_choice: bool) -> float:
    """Seconds of `steps` training steps after 3 warm-up ones."""
    if package_choice:
        import dpo_exp  # noqa: F401  (sets the wait policy, then loads torch)
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=2000,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
    )
    model = AutoModelForCausalLM.from_config(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    input_ids = torch.randint(0, 2000, (8, 96))

    def step() -> None:
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def child_env(policy: dict[str, str], threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(policy, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    return env


CONDITIONS = {"quiet": (1, 0.0), "beside a copy": (2, 0.0), "beside a later copy": (2, 3.0)}


def timed(name: str, *, threads: int, steps: int, copies: int, stagger_s: float) -> float:
    """Seconds of the slowest of `copies` workers, each started `stagger_s` after the previous."""
    command = [sys.executable, __file__, "--worker", "--steps", str(steps)]
    if name == PACKAGE_CHOICE:
        command.append("--package-choice")
    workers = []
    for copy in range(copies):
        if copy:
            time.sleep(stagger_s)
        env = child_env(POLICIES[name], threads)
        workers.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
    results = []
    for process in workers:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"worker failed under {name}")
        results.append(json.loads(out.strip().splitlines()[-1])["seconds"])
    return max(results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--policies", nargs="+", choices=sorted(POLICIES), default=list(POLICIES))
    parser.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--package-choice", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps({"seconds": worker(args.steps, package_choice=args.package_choice)}))
        return
    times: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats):  # alternating, so machine noise falls on every policy alike
        for name in args.policies:
            for condition in args.conditions:
                copies, stagger_s = CONDITIONS[condition]
                seconds = timed(
                    name, threads=args.threads, steps=args.steps, copies=copies, stagger_s=stagger_s
                )
                times.setdefault((name, condition), []).append(seconds)
                print(f"repeat {repeat} {name:<28} {condition:<20} {seconds:6.1f} s", flush=True)
    print(f"\n{args.steps} steps, {args.threads} threads, medians of {args.repeats} [range]:")
    print(f"| policy | {' | '.join(args.conditions)} |")
    print(f"|---|{'---|' * len(args.conditions)}")
    for name in args.policies:
        cells = []
        for condition in args.conditions:
            values = times[name, condition]
            cells.append(f"{statistics.median(values):.1f} s [{min(values):.1f}-{max(values):.1f}]")
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
