"""The CPU demos' tasks and models, built locally (no download): the chain-sum task
(`task.py`), the tiny Qwen2 (`tiny_model.py`) and its supervised warm start
(`warm_start.py`), the command that builds all three (`prepare.py`), and the learning
curve read back from verl's logged metrics (`report.py`). See docs/cpu_backend.md.
"""
