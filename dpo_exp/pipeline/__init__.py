"""The built-in experiment: SFT -> sample and label -> preference-train -> evaluate, cached by stage."""
