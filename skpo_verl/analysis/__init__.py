"""The paper's analyses as commands (`skpo-analyze`), each writing CSV and PNG.

`sign_accuracy.py` Appendix A (pure numpy), `conditioning.py` segments and the three
conditionings, `shortcut.py` Fig. 3, `implicit_advantage.py` Sec. 4.3, `cli.py` the command.
See docs/analysis.md.
"""
