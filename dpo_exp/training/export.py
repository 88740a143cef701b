"""The trained policy, handed back as a Hugging Face model folder: weights, tokenizer, model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel

from dpo_exp.console import progress
from dpo_exp.data.demonstrations import DEMONSTRATIONS
from dpo_exp.errors import ConfigError
from dpo_exp.losses import takes_beta
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


def base_model(model_cfg: DictConfig, named: str | None = None) -> str | None:
    """What the policy started from, in a form another machine finds: `export.base_model` where
    set (a hub id); a hub id as given; for a local folder, the hub id its config.json records
    (`_name_or_path`, written by `save_pretrained` of a model loaded from the hub), else its
    absolute path."""
    if named:
        return str(named)
    path = model_cfg.get("path")
    if path is None:
        return None
    if not Path(path).exists():
        return str(path)
    return recorded_hub_id(Path(path)) or str(Path(path).resolve())


def recorded_hub_id(folder: Path) -> str | None:
    """The `_name_or_path` a saved model's config.json records, where it is a hub id (owner/name)
    rather than a local path."""
    try:
        recorded = json.loads((folder / "config.json").read_text()).get("_name_or_path") or ""
    except (OSError, ValueError):
        return None
    looks_like_id = (
        recorded.count("/") == 1 and not recorded.startswith((".", "/", "~")) and not Path(recorded).exists()
    )
    return recorded if looks_like_id else None


def push_to_hub(directory: Path, repo_id: str) -> str:
    """Upload the exported folder to the hub as model repository `repo_id` (created if missing,
    private); the URL of the upload. Needs a token (`huggingface-cli login` or HF_TOKEN)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=True, exist_ok=True)
    commit = api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="model")
    return str(getattr(commit, "commit_url", commit))


def model_card(cfg: DictConfig, summary: dict[str, Any], *, adapter: bool) -> str:
    """A short card: what was trained on what, the final metrics, and the full resolved config."""
    base = base_model(cfg.model, cfg.export.get("base_model"))
    sft = cfg.data.get("source") == DEMONSTRATIONS
    method = "sft" if sft else "preference-optimization"
    beta = f", beta {cfg.beta}" if takes_beta(str(cfg.loss.name)) else ""
    front_matter = [
        "---",
        f"library_name: {'peft' if adapter else 'transformers'}",
        *([f"base_model: {base}"] if base else []),
        f"tags: [dpo_exp, {method}, {cfg.loss.name}]",
        "---",
    ]
    metrics = summary.get("metrics", {})
    rows = [f"| `{name}` | {value:.6g} |" for name, value in sorted(metrics.items())]
    lines = [
        *front_matter,
        "",
        f"# {cfg.run_name}",
        "",
        f"Trained with dpo_exp{' (supervised fine-tuning)' if sft else ''}: loss `{cfg.loss.name}`{beta}, "
        f"data `{cfg.data.name}`, "
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


def check_export(cfg: DictConfig, changed: list[str]) -> None:
    """`export.push_to_hub` and `export.base_model` act on the exported folder: refused without one."""
    for key in ("export.push_to_hub", "export.base_model"):
        if key in changed and not cfg.export.save:
            raise ConfigError(f"{key}: has no effect: export.save=false writes no model folder")
    repo = cfg.export.get("push_to_hub")
    if repo is not None and (not isinstance(repo, str) or repo.count("/") != 1):
        raise ConfigError(f"export.push_to_hub must be a hub repository id, owner/name; got {repo!r}")
