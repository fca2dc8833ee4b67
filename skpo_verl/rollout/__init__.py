"""Rollout: the `skpo_agent` agent loop (candidates, cut, select, answer), its multi-split
extension (`multi_split`) and its length budgets. A local token server that runs it without a
GPU engine is `skpo_verl.cpu.local_server`."""

# verl's name for the agent loop (`actor_rollout_ref.rollout.agent.default_agent_loop=skpo_agent`) and the
# class it instantiates; registered by `skpo_verl.patches.agent_loop`. Kept here, free of verl imports,
# so the shim can register it while `skpo_verl.rollout.agent_loop` is still importing.
AGENT_NAME = "skpo_agent"
AGENT_CLASS = "skpo_verl.rollout.agent_loop.SKPOAgentLoop"
