"""The config's schemas and its one validation, run at the entry before anything loads."""

from dpo_exp.config.naming import register_resolvers
from dpo_exp.config.validate import ConfigError, is_experiment, validate_config

register_resolvers()  # before Hydra composes conf/, which uses them

__all__ = ["ConfigError", "is_experiment", "validate_config"]
