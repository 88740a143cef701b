"""Models: loading (policy, reference, tokenizer), LoRA, config checks, and scoring of sequences."""
