"""The model card names what the policy started from in a form that finds it again."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from dpo_exp.errors import ConfigError
from dpo_exp.training.export import base_model, check_export, push_to_hub


def test_base_model_is_an_absolute_folder_or_a_hub_id(tmp_path: Path, monkeypatch):
    (tmp_path / "cache" / "sft" / "abc" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    relative = OmegaConf.create({"path": "cache/sft/abc/model"})
    assert base_model(relative) == str(tmp_path / "cache" / "sft" / "abc" / "model")
    assert base_model(OmegaConf.create({"path": "Qwen/Qwen2.5-0.5B"})) == "Qwen/Qwen2.5-0.5B"
    assert base_model(OmegaConf.create({"path": None})) is None  # built from a config: no base


def test_a_local_copy_of_a_hub_model_is_named_by_its_hub_id(tmp_path: Path):
    """`save_pretrained` of a model loaded from the hub records its id in config.json."""
    folder = tmp_path / "qwen"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}))
    assert base_model(OmegaConf.create({"path": str(folder)})) == "Qwen/Qwen2.5-0.5B-Instruct"
    (folder / "config.json").write_text(json.dumps({"_name_or_path": str(tmp_path / "elsewhere")}))
    assert base_model(OmegaConf.create({"path": str(folder)})) == str(folder)  # a path: no id to name
    named = base_model(OmegaConf.create({"path": str(folder)}), "me/my-sft")
    assert named == "me/my-sft"  # export.base_model wins


def test_push_to_hub_creates_a_private_repository_and_uploads_the_folder(tmp_path: Path, monkeypatch):
    import huggingface_hub

    calls = []

    class RecordingApi:
        def create_repo(self, repo_id, **options):
            calls.append(("create_repo", repo_id, options))

        def upload_folder(self, **options):
            calls.append(("upload_folder", options))
            return SimpleNamespace(commit_url=f"https://huggingface.co/{options['repo_id']}/commit/1")

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    url = push_to_hub(tmp_path, "me/tiny-dpo")
    assert calls == [
        ("create_repo", "me/tiny-dpo", {"repo_type": "model", "private": True, "exist_ok": True}),
        ("upload_folder", {"folder_path": str(tmp_path), "repo_id": "me/tiny-dpo", "repo_type": "model"}),
    ]
    assert url == "https://huggingface.co/me/tiny-dpo/commit/1"


@pytest.mark.parametrize(
    ("export", "changed", "message"),
    [
        ({"save": False, "push_to_hub": "me/x"}, ["export.push_to_hub"], "export.push_to_hub: has no effect"),
        ({"save": True, "push_to_hub": "just-a-name"}, [], "must be a hub repository id, owner/name"),
    ],
)
def test_export_settings_without_an_export_or_a_repository_id_are_refused(export, changed, message):
    cfg = OmegaConf.create({"export": {"base_model": None, "push_to_hub": None, **export}})
    with pytest.raises(ConfigError, match=message):
        check_export(cfg, changed)
