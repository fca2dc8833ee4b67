"""Evaluation with the paper's protocol: generate (vllm, hf or an OpenAI-compatible server),
score saved generations, render Table 1.

`protocol.py` the eight benchmarks, sample counts and graders, `backends.py` the generation
backends (shared with `skpo-analyze`), `generate.py` resumable sampling, `scoring.py` avg@k and
per-problem counts from a generations file, `choice.py` the MMLU-Pro grader, `sandbox.py`
(+ `sandbox_child.py`) the LiveCodeBench grader, `uncertainty.py` pass@k and bootstrap intervals,
`table.py` Markdown/CSV/bar chart and run comparisons, `cli.py` the `skpo-evaluate` command.
See docs/evaluation.md.
"""
