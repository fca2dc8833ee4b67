"""Version-pinned shims that adapt verl 0.9.1 for SKPO (installed as `skpo_verl.patches`).

Each shim is installed lazily by `skpo_verl.plugin` through a post-import hook: it runs
when verl imports the module it adapts, so no Ray process pays for verl modules it never
uses. Every shim calls `require_verl_version()` first and names the verl function it adapts.
"""

from skpo_verl.patches._hooks import (
    SUPPORTED_VERL_VERSION,
    UnsupportedVerlVersion,
    failed_shims,
    require_verl_version,
    when_imported,
)

__all__ = [
    "SUPPORTED_VERL_VERSION",
    "UnsupportedVerlVersion",
    "failed_shims",
    "require_verl_version",
    "when_imported",
]
