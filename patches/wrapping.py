"""The one way a shim replaces a verl function or method: `wrap(owner, name, parameters, make_wrapper)`.

`owner` is the class or module that holds `name` in verl 0.9.1; `parameters` are the leading
parameter names the shim relies on (checked against the real signature, so a verl release that
reorders or renames them fails at install, naming the function, instead of mid-run);
`make_wrapper(original)` returns the replacement, which calls `original` itself. A second call
with the same `make_wrapper` for the same attribute does nothing (hooks may run in a process that
already installed them); a different shim's wrapper wraps the first (two shims may adapt one verl
function, e.g. the agent loop's and the CPU backend's on `AgentLoopWorker._run_agent_loop`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence

_MARK = "__skpo_wrapped__"


def wrap(owner, name: str, parameters: Sequence[str], make_wrapper: Callable[[Callable], Callable]) -> None:
    """Replace `owner.name` by `make_wrapper(original)`, once, after checking its leading parameters."""
    original = getattr(owner, name)
    shim = f"{make_wrapper.__module__}.{make_wrapper.__qualname__}"
    installed = _shims(original)
    if shim in installed:
        return
    check_parameters(owner, name, parameters)
    wrapper = functools.wraps(original)(make_wrapper(original))
    setattr(wrapper, _MARK, installed | {shim})
    setattr(owner, name, wrapper)


def _shims(function) -> frozenset:
    """The shims whose wrappers `function` already is (a bare `True` mark: one unnamed shim)."""
    mark = getattr(function, _MARK, None)
    if isinstance(mark, (set, frozenset)):
        return frozenset(mark)
    return frozenset({"<unnamed>"}) if mark else frozenset()


def check_parameters(owner, name: str, parameters: Sequence[str]) -> None:
    """Raise unless `owner.name` takes `parameters` first, in that order."""
    found = list(inspect.signature(getattr(owner, name)).parameters)
    if found[: len(parameters)] != list(parameters):
        owner_name = getattr(owner, "__qualname__", getattr(owner, "__name__", owner))
        raise RuntimeError(
            f"{getattr(owner, '__module__', '')}.{owner_name}.{name}({', '.join(found)}) is not the signature "
            f"skpo_verl adapts (expected it to start with {', '.join(parameters)}); this verl is not the version "
            "the shim was written for."
        )


def is_wrapped(function) -> bool:
    """Whether `function` is a wrapper installed by `wrap`."""
    return bool(getattr(function, _MARK, False))
