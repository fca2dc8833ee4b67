"""Pretrained models for CPU runs: GGUF files (from pip packages or a path) -> verl-loadable checkpoints."""
