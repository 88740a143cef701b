"""The config's schemas and its one validation, run at the entry before anything loads."""

from dpo_exp.config.validate import ConfigError, is_experiment, validate_config

__all__ = ["ConfigError", "is_experiment", "validate_config"]
