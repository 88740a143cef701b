"""Does the default job's headline hold across what should not matter? SFT seeds, threads, kernels.

    python bench/headline_seeds.py                        # SFT seeds 0-9, torch's default threads
    python bench/headline_seeds.py --seeds 0 1 2 --threads default 1
    python bench/headline_seeds.py --capability avx2      # the same with torch's AVX2 kernels
    python bench/headline_seeds.py --split tune           # on the tune prompts (choosing a preset)

Runs `python train.py sft.seed=S` (the built-in experiment at its preset, each SFT seed its own
cold cache) one run after another, and prints per run: the step at which SFT reached its target,
the SFT model's sampled true reward on the held-out prompts, DPO's, and the gain with its 95%
interval paired over the prompts (the default job's `eval/gain/*`); then the gains' mean, standard
deviation and minimum, and how many runs gained at least `--target` with the interval above zero.
`--capability avx2` sets ATEN_CPU_CAPABILITY, so torch's vectorised kernels round as on a CPU
without AVX-512 (matrix multiplies through oneDNN/MKL keep the machine's own kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_default_job(
    sft_seed: int, threads: str, output_root: Path, capability: str | None, overrides: list[str]
) -> dict:
    """One default job into `output_root` (its `cache_dir` among `overrides`, else under it)."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads != "default":
        environment["OMP_NUM_THREADS"] = threads
    if capability:
        environment["ATEN_CPU_CAPABILITY"] = capability
    command = [sys.executable, "train.py", f"sft.seed={sft_seed}", f"output_root={output_root}",
               "trainer.enable_progress_bar=false", *overrides]  # fmt: skip
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
    parser.add_argument("--seeds", type=int, nargs="*", default=list(range(10)))
    parser.add_argument("--threads", nargs="*", default=["default"])
    parser.add_argument("--capability", default=None, help="ATEN_CPU_CAPABILITY, e.g. avx2")
    parser.add_argument("--split", default="eval", choices=["eval", "tune"])
    parser.add_argument("--target", type=float, default=0.12, help="the gain each run should reach")
    parser.add_argument(
        "--cache-dir", default=None, help="keep the SFT and sample stages here, to compare presets on them"
    )
    parser.add_argument("overrides", nargs="*", help="more train.py overrides (a preset to try)")
    args = parser.parse_args()
    overrides = [f"evaluate.split={args.split}", *args.overrides]
    if args.cache_dir is not None:  # a stage is reused only where its settings match (its key)
        overrides.append(f"cache_dir={Path(args.cache_dir).resolve()}")
    print(f"split {args.split}; overrides: {' '.join(args.overrides) or '(the preset)'}")
    print("| SFT seed | threads | SFT step | SFT reward | DPO reward | gain [95% interval] | KL | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    gains, held = [], 0
    for threads in args.threads:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as folder:
                outcome = run_default_job(seed, threads, Path(folder), args.capability, overrides)
            summary = outcome["summary"]
            metrics = summary["metrics"]
            low, gain, high = (metrics[f"eval/gain/{k}"] for k in ("ci95_low", "mean", "ci95_high"))
            gains.append(gain)
            held += gain >= args.target and low > 0
            step = summary["stages"]["sft"].get("reached_at_step")
            rewards = [
                f"{summary['reference']['eval/true_reward']:.3f}",
                f"{metrics['eval/true_reward']:.3f}",
            ]
            cells = [
                seed,
                threads,
                step,
                *rewards,
                f"{gain:+.3f} [{low:+.3f}, {high:+.3f}]",
                f"{metrics['eval/kl']:.2f}",
            ]
            print("| " + " | ".join(map(str, [*cells, f"{outcome['seconds']:.0f}"])) + " |", flush=True)
    spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
    print(
        f"\ngain over {len(gains)} runs: mean {statistics.mean(gains):+.3f}, sd {spread:.3f}, "
        f"min {min(gains):+.3f}; {held} of {len(gains)} reached {args.target:+.2f} with the interval above 0"
    )


if __name__ == "__main__":
    main()
