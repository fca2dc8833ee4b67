"""SKPO's math, as small pure functions with no verl import (docs/algorithm.md section in brackets).

- `split`:      the split length t_q and the early-EOS cut of candidates (§2.1-2.2)
- `selection`:  mean NLL and the median / extreme choice of the kept segment (§2.3)
- `advantages`: upstream rewards R_I, downstream group advantages, upstream advantages (§3-4)
- `tracker`:    forgetting factor rho, the Beta/EMA value tracker V(q), the length tracker L_q (§4)
- `sampling`:   SPO's prioritized prompt sampling (§4)
- `loss`:       upstream PPO-clip + downstream CISPO, the SKPO loss (§5); the only torch module

Import from the modules themselves; this package imports nothing, so reading the numpy
parts does not pull in torch.
"""
