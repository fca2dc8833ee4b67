"""Version-pinned shims that adapt verl 0.9.1 for SKPO (installed as `skpo_verl.patches`).

This is the only place that wraps or replaces verl code. Each shim is installed lazily by
`skpo_verl.plugin` through a post-import hook (`skpo_verl.hooks`): it runs when verl
imports the module it adapts, so no Ray process pays for verl modules it never uses. Every
shim calls `skpo_verl.verl_version.require_verl_version()` first and names the verl
function it adapts. Shims import from `skpo_verl`; nothing in `skpo_verl` imports a shim.
"""
