"""Rollout: the `skpo_agent` agent loop (candidates, cut, select, answer), its length
budgets, and a local token server that runs it without a GPU engine (tests, benchmarks)."""
