"""One prepared check of what dpo_exp has not run without a GPU: a row per feature, each its own process.

    python bench/gpu_check.py              # on a machine with a CUDA GPU (within --budget, 450 s)
    python bench/gpu_check.py --dry-run    # anywhere: the same commands on CPU, a tiny model, 2 steps

Each check is `python train.py` with its Hydra overrides, a few DPO steps on a Llama saved locally
from a config with the offline character tokenizer (no network), in its own process with its own
timeout, so a check that fails is a row of the table, not the end of the script:

1. bf16-mixed on one device; 2. bf16-true; 3. the reference cache (`reference.cache=true`, filled
on the device); 4. packed rows (`speed.pack=true`); 5. DDP (`strategy=ddp`: NCCL on GPUs, 2
processes where there are 2 GPUs, else 1; gloo in the dry run); 6. FSDP2 (`strategy=fsdp`, as many
processes); 7. QLoRA (`model.quantization=4bit` under `model.lora`; skipped where bitsandbytes is
not installed); 8. Qwen2.5-0.5B's shape (bench/scale.py's model, built from a config), dpo_exp and
TRL's DPOTrainer (its defaults: gradient checkpointing on) in the same precision, through
bench/scale.py's workers (TRL skipped where it is not importable). Every check but 2 trains in
bf16-mixed. The dry run reports 7 and 8 as skipped: they need a CUDA GPU.

Printed: the device in words, then one Markdown table (also written to `--output`): whether each
check ran (yes / failed: the reason / skipped: the reason), tokens/s, peak memory (on a GPU
`torch.cuda.max_memory_allocated`, on CPU the peak RSS; rank 0's under DDP and FSDP), MFU (dpo_exp's
FLOP count over the matmul peak measured in the run), and the step-0 figures of a run that starts
from its reference: the loss at step 0 and its value at log-ratio 0 (ln 2 = 0.693147 for DPO), from
the run's summary.json. Each check's full output is in `<work folder>/logs/`, its command first.
The whole script keeps to `--budget` seconds: a check that would start after it is skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import scale
from compare_trl import ROOT, child_env

PRECISION = "bf16-mixed"  # every check's but bf16-true's
SCALE_VARIANTS = {"0.5B shape: dpo_exp": "dpo_exp", "0.5B shape: TRL DPOTrainer": "trl default"}
SCALE_STEPS = 5  # of scale.PAIRS_PER_STEP pairs at its HH-like lengths
LORA = "model.lora={r:16,alpha:32,dropout:0.0,target_modules:all-linear}"


@dataclass(frozen=True)
class Size:
    """The model, data and run length of checks 1-7: a real GPU's, or the dry run's."""

    model: dict[str, int]
    pairs_per_step: int
    steps: int
    prompt_chars: tuple[int, int]
    answer_chars: tuple[int, int]  # spread more than twofold, so packing has pairs to pack


GPU = Size(
    model=dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16),
    pairs_per_step=8,
    steps=10,
    prompt_chars=(64, 384),
    answer_chars=(16, 192),
)
DRY = Size(
    model=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
    pairs_per_step=2,
    steps=2,
    prompt_chars=(8, 40),
    answer_chars=(4, 24),
)
MAX_LENGTH = 1024  # longer than any row of either size: nothing is truncated


@dataclass(frozen=True)
class Check:
    name: str
    overrides: list[str] = field(default_factory=list)
    skip: str | None = None  # why it does not run here


@dataclass
class Row:
    check: str
    ran: str
    tokens_per_s: float | None = None
    peak_memory_gb: float | None = None
    mfu: float | None = None
    step_zero: dict | None = None

    def cells(self) -> list[str]:
        step_zero = ""
        if self.step_zero is not None:
            step_zero = "{loss:.6f} / {loss_at_zero:.6f}".format(**self.step_zero)
        return [
            self.check,
            self.ran,
            "" if self.tokens_per_s is None else f"{self.tokens_per_s:,.0f}",
            "" if self.peak_memory_gb is None else f"{self.peak_memory_gb:.2f} GB",
            "" if self.mfu is None else f"{100 * self.mfu:.3g}%",
            step_zero,
        ]


HEADER = ["check", "ran", "tokens/s", "peak memory", "MFU", "step-0 loss / at log-ratio 0"]


# -- set-up ------------------------------------------------------------------------------------


def device_in_words(on_gpu: bool) -> str:
    import torch

    if on_gpu:
        name, count = torch.cuda.get_device_name(0), torch.cuda.device_count()
        return f"{count} × {name} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), flags=re.MULTILINE)
        model = names[0].strip() if names else model
    return f"CPU: {model}, {os.cpu_count()} cores (torch {torch.__version__})"


def build_model_and_data(directory: Path, size: Size, seed: int = 0) -> None:
    """A Llama of `size` with the character tokenizer, saved locally, and train/validation JSONL
    of random text: every pair a prompt and two answers of random lengths."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from dpo_exp.models.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=size.model["num_attention_heads"],
        max_position_embeddings=MAX_LENGTH,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **size.model,
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    rng = random.Random(seed)

    def text(low: int, high: int) -> str:
        return "".join(rng.choice("abcdefghij ") for _ in range(rng.randint(low, high)))

    counts = (("train", size.pairs_per_step * size.steps), ("validation", 2 * size.pairs_per_step))
    for split, count in counts:
        with (directory / f"{split}.jsonl").open("w") as handle:
            for _ in range(count):
                row = {
                    "prompt": text(*size.prompt_chars),
                    "chosen": text(*size.answer_chars),
                    "rejected": text(*size.answer_chars),
                }
                handle.write(json.dumps(row) + "\n")


def base_overrides(model_dir: Path, work: Path, size: Size) -> list[str]:
    return [
        "model=hf",
        f"model.path={model_dir}",
        "data=pairs",
        f"data.train_path={model_dir / 'train.jsonl'}",
        f"data.validation_path={model_dir / 'validation.jsonl'}",
        f"data.batch_size={size.pairs_per_step}",
        f"data.eval_batch_size={size.pairs_per_step}",
        f"data.max_length={MAX_LENGTH}",
        f"data.max_prompt_length={MAX_LENGTH // 2}",
        f"trainer.max_steps={size.steps}",
        f"trainer.val_check_interval={size.steps}",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_checkpointing=false",
        "export.save=false",
        f"output_root={work / 'outputs'}",  # the reference cache is filled there
    ]


def train_checks(on_gpu: bool, processes: int) -> list[Check]:
    """Checks 1-7: overrides on top of `base_overrides`."""
    bf16 = f"trainer.precision={PRECISION}"
    backend = "NCCL" if on_gpu else "gloo"
    plural = "process" if processes == 1 else "processes"
    devices = f"strategy.devices={processes}"
    qlora_skip = None
    if not on_gpu:
        qlora_skip = "needs a CUDA GPU"
    elif importlib.util.find_spec("bitsandbytes") is None:
        qlora_skip = "bitsandbytes is not installed (pip install bitsandbytes)"
    return [
        Check("bf16-mixed, one device", [bf16]),
        Check("bf16-true, one device", ["trainer.precision=bf16-true"]),
        Check("reference cache (`reference.cache=true`)", [bf16, "reference.cache=true"]),
        Check("packed rows (`speed.pack=true`)", [bf16, "speed.pack=true"]),
        Check(f"DDP, {processes} {plural}, {backend}", [bf16, "strategy=ddp", devices]),
        Check(f"FSDP2, {processes} {plural}", [bf16, "strategy=fsdp", devices]),
        Check("QLoRA (`model.quantization=4bit`)", [bf16, "model.quantization=4bit", LORA], skip=qlora_skip),
    ]


# -- running -----------------------------------------------------------------------------------


def run_logged(command: list[str], env: dict[str, str], timeout: float, log: Path) -> str | None:
    """Run `command` in the project root with its output in `log`; None, or why it failed."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        output = [part.decode(errors="replace") if isinstance(part, bytes) else part or "" for part in
                  (expired.stdout, expired.stderr)]  # fmt: skip
        log.write_text(" ".join(command) + "\n\n" + "\n".join(output))
        return f"timed out after {timeout:.0f} s"
    log.write_text(f"{' '.join(command)}\n\n{done.stdout}\n{done.stderr}")
    if done.returncode == 0:
        return None
    return f"exit status {done.returncode}: {last_line(done.stderr) or last_line(done.stdout)}"


def last_line(text: str) -> str:
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:200].replace("|", "/") if lines else ""


def run_train_check(check: Check, base: list[str], work: Path, timeout: float) -> Row:
    slug = re.sub(r"[^a-z0-9]+", "_", check.name.lower()).strip("_")
    run_dir = work / "runs" / slug
    command = [sys.executable, "train.py", *base, *check.overrides, f"hydra.run.dir={run_dir}"]
    failure = run_logged(command, child_env(), timeout, work / "logs" / f"{slug}.log")
    if failure is not None:
        return Row(check.name, f"failed: {failure}")
    summary_file = run_dir / "summary.json"
    if not summary_file.exists():
        return Row(check.name, "failed: the run wrote no summary.json")
    summary = json.loads(summary_file.read_text())
    return Row(
        check.name,
        "yes",
        tokens_per_s=summary.get("tokens_per_s"),
        peak_memory_gb=summary.get("peak_memory_gb"),
        mfu=summary.get("mfu"),
        step_zero=summary.get("step_zero"),
    )


def scale_rows(on_gpu: bool, work: Path, deadline: float, timeout: float) -> list[Row]:
    """Check 8: bench/scale.py's 0.5B shape, dpo_exp and TRL, in `PRECISION`, a process each."""
    if not on_gpu:
        return [Row(name, "skipped: needs a CUDA GPU") for name in SCALE_VARIANTS]
    directory = work / "qwen2.5-0.5b-shape"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        scale.build_model_and_data(directory, lengths="hh", pairs=scale.PAIRS_PER_STEP * SCALE_STEPS)
    except Exception as error:  # noqa: BLE001 - any failure of the build is both rows' reason
        return [Row(name, f"failed: building the model: {error!r}"[:200]) for name in SCALE_VARIANTS]
    rows = []
    for name, variant in SCALE_VARIANTS.items():
        if variant.startswith("trl") and importlib.util.find_spec("trl") is None:
            rows.append(Row(name, 'skipped: trl is not importable (pip install -e ".[bench]")'))
            continue
        left = deadline - time.monotonic()
        if left < 30:
            rows.append(Row(name, "skipped: the --budget was spent"))
            continue
        command = scale.variant_command(directory, "hh", SCALE_STEPS, variant, PRECISION)
        log = work / "logs" / f"scale_{variant.replace(' ', '_')}.log"
        failure = run_logged(command, scale.variant_env(variant), min(timeout, left), log)
        rows.append(Row(name, f"failed: {failure}") if failure else scale_row(name, log))
    return rows


def scale_row(name: str, log: Path) -> Row:
    """A scale.py worker's JSON result (its last stdout line, before the stderr in `log`)."""
    results = [line for line in log.read_text().splitlines() if line.startswith('{"tokens"')]
    if not results:
        return Row(name, "failed: the worker printed no result")
    result = json.loads(results[-1])
    return Row(
        name,
        "yes",
        tokens_per_s=result["tokens"] / result["train_s"],
        peak_memory_gb=result["peak_memory_gb"],
        mfu=result["flops"] / result["train_s"] / result["peak_flops"],
        step_zero=result.get("step_zero"),
    )


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def settings_line(size: Size, on_gpu: bool) -> str:
    model = size.model
    line = (
        f"checks 1-7: Llama hidden {model['hidden_size']}, {model['num_hidden_layers']} layers, "
        f"character vocabulary; {size.steps} steps of {size.pairs_per_step} pairs; {PRECISION} but row 2"
    )
    if on_gpu:
        line += f". 0.5B shape: {SCALE_STEPS} steps of {scale.PAIRS_PER_STEP} pairs, HH-like lengths"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="on CPU: the tiny model, gloo, 2 steps")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--output", type=Path, default=None, help="the table (default: under outputs/)")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds a check may run")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds all checks may run")
    args = parser.parse_args()
    start = time.monotonic()
    deadline = start + args.budget
    os.environ["TQDM_DISABLE"] = "1"  # no progress bars from saving the models
    import torch

    on_gpu = not args.dry_run and torch.cuda.is_available()
    if not args.dry_run and not on_gpu:
        raise SystemExit("no CUDA GPU here: `python bench/gpu_check.py --dry-run` runs the checks on CPU")
    size = GPU if on_gpu else DRY
    processes = min(2, torch.cuda.device_count()) if on_gpu else 2
    work = args.dir or Path(tempfile.mkdtemp(prefix="dpo_exp_gpu_check_"))
    model_dir = work / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    device = device_in_words(on_gpu)
    print(f"{device}\nwork folder: {work}", flush=True)
    build_model_and_data(model_dir, size)
    base = base_overrides(model_dir, work, size)
    rows = []
    for check in train_checks(on_gpu, processes):
        began = time.monotonic()
        if check.skip is not None or deadline - began < 30:
            rows.append(Row(check.name, f"skipped: {check.skip or 'the --budget was spent'}"))
        else:
            rows.append(run_train_check(check, base, work, min(args.timeout, deadline - began)))
        print(f"  {rows[-1].check}: {rows[-1].ran} ({time.monotonic() - began:.0f} s)", flush=True)
    rows += scale_rows(on_gpu, work, deadline, max(args.timeout, 240.0))
    table = markdown(rows)
    took = f"{time.monotonic() - start:.0f} s in all"
    print(f"\n{device}\n{settings_line(size, on_gpu)}; {took}\n\n{table}")
    name = f"gpu_check-{time.strftime('%Y%m%d-%H%M%S')}{'-dry-run' if args.dry_run else ''}.md"
    output = args.output or ROOT / "outputs" / "gpu_check" / name
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(f"{device}\n\n{settings_line(size, on_gpu)}; {took}\n\n{table}\n")
    print(f"\ntable written to {output}")


if __name__ == "__main__":
    main()
