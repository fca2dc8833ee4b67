"""The one verl version skpo-verl supports, and the gate every shim passes first.

`setup.py` reads `SUPPORTED_VERL_VERSION` from this file (it imports nothing), so the pin in
the package metadata and the check at run time cannot disagree.
"""

from __future__ import annotations

import importlib.metadata

SUPPORTED_VERL_VERSION = "0.9.1"


class UnsupportedVerlVersion(RuntimeError):
    pass


def installed_verl_version() -> str:
    return importlib.metadata.version("verl")


def require_verl_version(shim: str) -> None:
    """Refuse to adapt a verl other than the one the shim was written against."""
    version = installed_verl_version()
    if version != SUPPORTED_VERL_VERSION:
        raise UnsupportedVerlVersion(
            f"skpo_verl shim '{shim}' adapts verl {SUPPORTED_VERL_VERSION} internals, but verl {version} is "
            f"installed. Install verl=={SUPPORTED_VERL_VERSION} (pip install 'verl=={SUPPORTED_VERL_VERSION}') "
            "or a skpo-verl release made for your verl."
        )
