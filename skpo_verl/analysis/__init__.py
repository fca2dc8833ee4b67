"""The paper's analyses as commands (`skpo-analyze`), each writing CSV and PNG.

`sign_accuracy.py` Appendix A (pure numpy), `conditioning.py` segments and the three
conditionings, `shortcut.py` Fig. 3, `implicit_advantage.py` Sec. 4.3, `cli.py` the command.
See docs/analysis.md. Two diagnostics of the CPU chain-sum task run as modules of their own:
`upstream_signs.py` (which kept segments the upstream term pushes down, from verl's rollout
dump) and `segment_effect.py` (how much the kept segment decides the answers).
"""
