"""Built-in tasks with a programmatic reward, generated from a seed (no download)."""
