"""The trained policy, handed back as a Hugging Face model folder: weights, tokenizer, model card."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel

from dpo_exp.console import progress
from dpo_exp.models.lora import TRAINED_ADAPTER, is_lora
from dpo_exp.storage import building_folder

EXPORT_DIR = "model"  # inside the run folder


def export_policy(
    policy: PreTrainedModel, tokenizer: Any, directory: Path, *, cfg: DictConfig, summary: dict[str, Any]
) -> Path:
    """`save_pretrained` the policy and its tokenizer into `directory`, with a model card (README.md).

    A LoRA policy is merged into its base (`export.lora=merged`, in place: call this after
    training) or saved as the adapter alone (`export.lora=adapter`), which
    `AutoModelForCausalLM.from_pretrained` loads on top of the base named in its adapter_config.json.
    The folder is written under a temporary name and renamed into place: it is whole or absent.
    """
    model = policy
    if is_lora(policy) and cfg.export.lora == "merged":
        model = policy.merge_and_unload()
    if directory.exists():  # an earlier export of a run that stopped before its summary
        shutil.rmtree(directory)
    with building_folder(directory) as building, progress(total=3, desc="export", unit="parts") as bar:
        if is_lora(model):
            # Only the trained adapter: a frozen reference copy of the starting adapter is not the result.
            model.save_pretrained(building, selected_adapters=[TRAINED_ADAPTER])
        else:
            model.save_pretrained(building)
        bar.update()
        tokenizer.save_pretrained(building)
        bar.update()
        (building / "README.md").write_text(model_card(cfg, summary, adapter=is_lora(model)))
        bar.update()
    return directory


def base_model(model_cfg: DictConfig) -> str | None:
    """What the policy started from: a local folder as an absolute path, or a hub id as it is."""
    path = model_cfg.get("path")
    if path is None:
        return None
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def model_card(cfg: DictConfig, summary: dict[str, Any], *, adapter: bool) -> str:
    """A short card: what was trained on what, the final metrics, and the full resolved config."""
    base = base_model(cfg.model)
    front_matter = [
        "---",
        f"library_name: {'peft' if adapter else 'transformers'}",
        *([f"base_model: {base}"] if base else []),
        "tags: [dpo_exp, preference-optimization, " + str(cfg.loss.name) + "]",
        "---",
    ]
    metrics = summary.get("metrics", {})
    rows = [f"| `{name}` | {value:.6g} |" for name, value in sorted(metrics.items())]
    lines = [
        *front_matter,
        "",
        f"# {cfg.run_name}",
        "",
        f"Trained with dpo_exp: loss `{cfg.loss.name}`, beta {cfg.beta}, data `{cfg.data.name}`, "
        f"{summary.get('global_step', '?')} steps from `{base or cfg.model.name}`"
        + (" (LoRA adapter; loads its base by path)." if adapter else "."),
        "",
        "## Final metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *rows,
        "",
        "## Config",
        "",
        "```yaml",
        OmegaConf.to_yaml(cfg, resolve=True).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)
