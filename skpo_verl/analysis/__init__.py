"""The paper's analyses as commands (`skpo-analyze`), each writing CSV and PNG.

`sign_accuracy.py` Appendix A.2 (Figs. 5, 6a) and `token_advantages.py` Appendix A.3 (Figs. 7,
8), pure numpy; `conditioning.py` token-position segments and the three conditionings,
`shortcut.py` Fig. 3, `implicit_advantage.py` Sec. 4.3 (Fig. 4), `skip_layout.py` where [s, q]
puts s in a chat template, `cli.py` the command.
See docs/analysis.md. Two diagnostics of the CPU chain-sum task run as modules of their own:
`upstream_signs.py` (which kept segments the upstream term pushes down, from verl's rollout
dump) and `segment_effect.py` (how much the kept segment decides the answers).
"""
