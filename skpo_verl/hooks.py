"""Post-import hooks: how every shim attaches to the verl module it adapts.

`when_imported(name, fn)` runs `fn(module)` right after `name` finishes importing (or at
once if it already has). A hook that raises is reported loudly on stderr and recorded in
`failed_shims()`, which the driver checks at start-up: verl swallows plugin import errors
at DEBUG level, so a silent failure would otherwise train plain verl under SKPO's name.
"""

from __future__ import annotations

import importlib.abc
import logging
import sys
import threading
from collections.abc import Callable

logger = logging.getLogger("skpo_verl")

_hooks: dict[str, list[tuple[str, Callable]]] = {}
_failures: dict[str, str] = {}
_lock = threading.RLock()


def failed_shims() -> dict[str, str]:
    """Shims whose installation raised, by name, with the error text."""
    with _lock:
        return dict(_failures)


def when_imported(module_name: str, hook: Callable, name: str | None = None) -> None:
    """Run `hook(module)` once `module_name` is imported; now if it already is."""
    name = name or f"{hook.__module__}.{hook.__qualname__}"
    with _lock:
        module = sys.modules.get(module_name)
        if module is None or getattr(module, "__spec__", None) is None or _initialising(module):
            _hooks.setdefault(module_name, []).append((name, hook))
            _install_finder()
            return
    _run(name, hook, module)


def _initialising(module) -> bool:
    spec = module.__spec__
    return bool(getattr(spec, "_initializing", False))


def _run(name: str, hook: Callable, module) -> None:
    try:
        hook(module)
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
        with _lock:
            _failures[name] = message
        print(f"[skpo_verl] ERROR: shim {name} failed to install: {message}", file=sys.stderr, flush=True)
        logger.error("shim %s failed to install", name, exc_info=True)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of hooked modules so the hooks run after the module body."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _HookedLoader(spec.loader)
                return spec
        return None


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        with _lock:
            pending = _hooks.pop(module.__name__, [])
        for name, hook in pending:
            _run(name, hook, module)

    def __getattr__(self, item):
        return getattr(self._loader, item)


_finder = _PostImportFinder()


def _install_finder() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
