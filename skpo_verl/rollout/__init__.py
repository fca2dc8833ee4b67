"""Rollout: the `skpo_agent` agent loop (candidates, cut, select, answer), its length
budgets, and a local token server that runs it without a GPU engine (tests, benchmarks)."""

# verl's name for the agent loop (`actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent`) and the
# class it instantiates; registered by `skpo_verl.patches.agent_loop`. Kept here, free of verl imports,
# so the shim can register it while `skpo_verl.rollout.agent_loop` is still importing.
AGENT_NAME = "skpo_agent"
AGENT_CLASS = "skpo_verl.rollout.agent_loop.SKPOAgentLoop"
