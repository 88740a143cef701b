"""Errors the user can cause and fix, shared by every layer: the entry prints them as one message."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work, named by its dotted key."""
