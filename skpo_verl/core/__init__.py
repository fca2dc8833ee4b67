"""SKPO's math, as small pure functions with no verl import (docs/algorithm.md section in brackets).

- `split`:      the split length t_q and the early-EOS cut of candidates (Rollout, steps 1 and 3)
- `selection`:  mean NLL and the median / extreme choice of the kept segment (Rollout, step 4)
- `advantages`: upstream rewards R_I, downstream group advantages, upstream advantages (Rewards, Advantages)
- `tracker`:    forgetting factor rho, the Beta/EMA value tracker V(q), the length tracker L_q (Trackers)
- `sampling`:   SPO's prioritized prompt sampling (Sampling)
- `loss`:       upstream PPO-clip + downstream CISPO, the SKPO loss and its diagnostics (Loss); the only
                torch module

Import from the modules themselves; this package imports nothing, so reading the numpy
parts does not pull in torch.
"""
