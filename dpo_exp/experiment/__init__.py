"""The built-in experiment: SFT -> sample and label -> train -> evaluate against a verifier.

It produces the inputs of training runs (a model path, data files, an evaluation callback) and
calls `dpo_exp.training.train` for each; nothing below it imports it.
"""
