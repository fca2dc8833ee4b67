"""Evaluation with the paper's protocol: generate (vLLM), score saved generations, render Table 1.

`protocol.py` the benchmarks and sample counts, `generate.py` the only GPU part, `scoring.py`
avg@k from a generations file, `table.py` Markdown/CSV/bar chart, `cli.py` the
`skpo-evaluate` command. See docs/evaluation.md.
"""
