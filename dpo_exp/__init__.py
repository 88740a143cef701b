"""dpo_exp: config-driven preference fine-tuning experiments (DPO, IPO, KTO, ORPO, ...)."""

from dpo_exp.threads import set_wait_policy

# Before any module imports torch: its OpenMP runtime reads the wait policy when it loads.
set_wait_policy()

__version__ = "0.1.0"
