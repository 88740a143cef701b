"""Does the default job's headline hold across what should not matter? Six figures.

    python bench/headline_seeds.py                        # SFT seeds 0, 1, 2 × torch threads (default, 1)
    python bench/headline_seeds.py --capability avx2      # the same with torch's AVX2 kernels

Runs `python train.py sft.seed=S` (the built-in experiment at its preset, each SFT seed its own
cold cache) with torch's default thread count and with OMP_NUM_THREADS=1, one run after another,
and prints per run: the step at which SFT reached its target, the SFT model's sampled true reward
on the held-out `eval` prompts, DPO's, and the gain (target +0.15; 500 prompts: about ±0.02).
`--capability avx2` sets ATEN_CPU_CAPABILITY, so torch's vectorised kernels round as on a CPU
without AVX-512 (matrix multiplies through oneDNN/MKL keep the machine's own kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_default_job(sft_seed: int, threads: str, output_root: Path, capability: str | None) -> dict:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads != "default":
        environment["OMP_NUM_THREADS"] = threads
    if capability:
        environment["ATEN_CPU_CAPABILITY"] = capability
    command = [sys.executable, "train.py", f"sft.seed={sft_seed}", f"output_root={output_root}",
               "trainer.enable_progress_bar=false"]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    (summary_path,) = (output_root / "runs").rglob("summary.json")
    summary = json.loads(summary_path.read_text())
    return {"summary": summary, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--threads", nargs="*", default=["default", "1"])
    parser.add_argument("--capability", default=None, help="ATEN_CPU_CAPABILITY, e.g. avx2")
    args = parser.parse_args()
    print("| SFT seed | threads | SFT step | SFT reward | DPO reward | gain | wall s |")
    print("|---|---|---|---|---|---|---|")
    for threads in args.threads:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as folder:
                outcome = run_default_job(seed, threads, Path(folder), args.capability)
            summary = outcome["summary"]
            sft_reward = summary["reference"]["eval/true_reward"]
            reward = summary["metrics"]["eval/true_reward"]
            step = summary["stages"]["sft"].get("reached_at_step")
            cells = [seed, threads, step, f"{sft_reward:.3f}", f"{reward:.3f}", f"{reward - sft_reward:+.3f}"]
            print("| " + " | ".join(map(str, [*cells, f"{outcome['seconds']:.0f}"])) + " |", flush=True)


if __name__ == "__main__":
    main()
