"""One training run: `train(cfg, run_dir)` builds the module, trainer and callbacks from a
validated config, trains, and writes the run folder (config, metrics, checkpoints, summary, export).
"""

from dpo_exp.training.export import EXPORT_DIR
from dpo_exp.training.run import train
from dpo_exp.training.run_files import write_failure

__all__ = ["EXPORT_DIR", "train", "write_failure"]
