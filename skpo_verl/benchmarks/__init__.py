"""Benchmarks that run on CPU with the local tiny model (python -m skpo_verl.benchmarks.<name>)."""
