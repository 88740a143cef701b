"""Preference data: record types, sources, tokenisation and the DataModule."""

# Every source registers itself when its module is imported; this one lives beside the registry's
# own sources, so that `get_source` knows it however the package was first imported.
import dpo_exp.data.demonstrations  # noqa: E402, F401
