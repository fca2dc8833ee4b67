"""SKPO's outcome reward R_II (+1 / -1), judged by math-verify in guarded judge processes.

Select it in verl with `reward.custom_reward_function.path=pkg://skpo_verl.reward` and
`reward.custom_reward_function.name=compute_score`; `score` holds the implementation.
"""

from skpo_verl.reward.score import compute_score

__all__ = ["compute_score"]
