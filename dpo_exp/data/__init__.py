"""Preference data: record types, sources, tokenisation and the DataModule."""
