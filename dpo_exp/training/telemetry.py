"""Training telemetry: tokens/s, padding fraction, peak memory and MFU.

Logged every N steps under `perf/` and kept for the summary. FLOPs are counted per step by
`flops.StepFlops` (as the step's matrix products run); MFU is those FLOPs over the measured step
time, divided by the peak FLOP/s of a matrix product measured on the machine when the run starts
(`measure_matmul_peak`), or a configured figure.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from dpo_exp.data.collate import PAD
from dpo_exp.training.flops import StepFlops


def measure_matmul_peak(
    *,
    size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seconds: float = 0.5,
) -> float:
    """FLOP/s of square matrix products of `size` on `device` in `dtype` (with torch's current
    threads on a CPU): the best of repeated timings over about `seconds` (the best, as a peak is: a
    busy moment lowers a timing, nothing raises it). A GPU needs a product large enough to fill it
    (4096² by default) and many products between two syncs, or the launch and the sync are timed."""
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    size = size or (4096 if on_gpu else 1024)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=generator, device=device).to(dtype)
    b = torch.randn(size, size, generator=generator, device=device).to(dtype)

    def synchronize() -> None:
        if on_gpu:
            torch.cuda.synchronize(device)

    seconds_per_call = best_seconds_per_call(
        lambda: torch.mm(a, b), synchronize, seconds=seconds, calls=20 if on_gpu else 1
    )
    return 2 * size**3 / seconds_per_call


def best_seconds_per_call(
    call: Callable[[], Any],
    synchronize: Callable[[], None],
    *,
    seconds: float,
    calls: int,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """The best time of `calls` calls in a row (one sync at the end), per call, over about
    `seconds` of repeats after one warm-up (threads started, kernels chosen)."""
    call()
    synchronize()
    best, deadline = float("inf"), clock() + seconds
    while clock() < deadline or best == float("inf"):
        start = clock()
        for _ in range(calls):
            call()
        synchronize()
        best = min(best, (clock() - start) / calls)
    return best


def peak_memory_gb() -> float:
    """Peak GPU memory allocated when on a GPU, else the process's peak resident set size."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes on macOS, KiB on Linux


def row_lengths(batch: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
    """Non-padding positions of each row the model runs on."""
    if f"{prefix}token_parts" in batch:
        return (batch[f"{prefix}token_parts"] != PAD).sum(-1)
    return batch[f"{prefix}attention_mask"].sum(-1)


def sequence_tokens(batch: dict[str, torch.Tensor], prefix: str = "") -> int:
    """Tokens of the batch's chosen and rejected sequences, a shared prompt counted in each."""
    if f"{prefix}sequence_lengths" in batch:
        return int(batch[f"{prefix}sequence_lengths"].sum())
    return int(batch[f"{prefix}attention_mask"].sum())


class TokenThroughput(L.Callback):
    """Counts tokens of chosen and rejected sequences, and model FLOPs, over measured time.

    Tokens are counted as in one padded row per sequence whatever the layout, so tokens/s compare
    across layouts; the padding fraction and the FLOPs are those of the rows actually run.

    Time runs from the first training batch to the last, so start-up and validation are excluded.
    """

    def __init__(
        self,
        log_every_n_steps: int = 10,
        *,
        flops: StepFlops | None = None,
        peak_flops: float | None = None,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.log_every_n_steps = log_every_n_steps
        self.step_flops = flops
        self.peak_flops = peak_flops  # None: measured when the fit starts
        self.compute_dtype = compute_dtype
        self.tokens = 0  # of the chosen and rejected sequences, however they are laid out in rows
        self.real_positions = 0  # input positions that are not padding
        self.positions = 0
        self.flops = 0.0
        self.train_seconds = 0.0
        self._batch_start = 0.0

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """The peak of this rank's own device, once the strategy has placed the module there."""
        if self.peak_flops is None:
            self.peak_flops = measure_matmul_peak(dtype=self.compute_dtype, device=module.device)

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if module.device.type == "cuda":  # kernels run asynchronously: the step ends when they do
            torch.cuda.synchronize(module.device)
        self.train_seconds += time.perf_counter() - self._batch_start
        for prefix in ("", "kl_"):
            if f"{prefix}input_ids" in batch:
                self.tokens += int(sequence_tokens(batch, prefix))
                self.real_positions += int(row_lengths(batch, prefix).sum())
                self.positions += batch[f"{prefix}input_ids"].numel()
        if self.step_flops is not None:
            self.flops += self.step_flops(batch, head_on_completions=module.head_on_completions)
        if trainer.global_step % self.log_every_n_steps == 0:
            module.log_dict(
                {
                    "perf/tokens_per_s": self.tokens_per_s,
                    "perf/padding_fraction": self.padding_fraction,
                    "perf/peak_memory_gb": peak_memory_gb(),
                    "perf/mfu": self.mfu,
                }
            )

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def padding_fraction(self) -> float:
        return 1 - self.real_positions / self.positions if self.positions else 0.0

    @property
    def mfu(self) -> float:
        """Model FLOPs per second over the peak (measured when the fit started, or configured)."""
        if not self.train_seconds or not self.peak_flops:
            return 0.0
        return self.flops / self.train_seconds / self.peak_flops

    @property
    def peak_memory_gb(self) -> float:
        return peak_memory_gb()

    def figures(self) -> dict[str, float | int]:
        """The run's throughput figures, as summary.json keeps them."""
        return {
            "train_time_s": self.train_seconds,
            "tokens": self.tokens,
            "tokens_per_s": self.tokens_per_s,
            "padding_fraction": self.padding_fraction,
            "peak_memory_gb": self.peak_memory_gb,
            "mfu": self.mfu,
            "peak_flops": self.peak_flops,
        }
