"""The model card names what the policy started from in a form that finds it again."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from dpo_exp.training.export import base_model


def test_base_model_is_an_absolute_folder_or_a_hub_id(tmp_path: Path, monkeypatch):
    (tmp_path / "cache" / "sft" / "abc" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    relative = OmegaConf.create({"path": "cache/sft/abc/model"})
    assert base_model(relative) == str(tmp_path / "cache" / "sft" / "abc" / "model")
    assert base_model(OmegaConf.create({"path": "Qwen/Qwen2.5-0.5B"})) == "Qwen/Qwen2.5-0.5B"
    assert base_model(OmegaConf.create({"path": None})) is None  # built from a config: no base
