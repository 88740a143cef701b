"""dpo_exp: config-driven preference fine-tuning experiments (DPO, IPO, KTO, ORPO, ...)."""

__version__ = "0.1.0"
