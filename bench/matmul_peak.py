"""The matrix-product peak MFU divides by, measured on this machine.

    python bench/matmul_peak.py                    # fp32 on CPU, sizes 256-4096, torch's threads
    python bench/matmul_peak.py --dtype bfloat16 --device cuda

Prints, per square size, the best FLOP/s of repeated products over `--seconds` each (a peak: a busy
moment lowers a timing, nothing raises it), and the median of `--repeats` such bests with their
range. A run with `speed.peak_flops=null` measures the same way when its fit starts, on its own
device and in the dtype it computes in (1024² on a CPU; 4096² on a GPU, 20 products a sync).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from dpo_exp.training.telemetry import measure_matmul_peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"{args.dtype} on {args.device}, {torch.get_num_threads()} threads")
    print("| size | GFLOP/s (median of bests) | range |")
    print("|---|---|---|")
    for size in args.sizes:
        bests = [
            measure_matmul_peak(size=size, dtype=dtype, device=args.device, seconds=args.seconds) / 1e9
            for _ in range(args.repeats)
        ]
        print(f"| {size} | {statistics.median(bests):.1f} | {min(bests):.1f}-{max(bests):.1f} |")


if __name__ == "__main__":
    main()
