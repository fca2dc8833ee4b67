"""`skpo_verl.patches.wrapping.wrap`: the one way a shim replaces a verl function."""

from __future__ import annotations

import types

import pytest

from skpo_verl.patches.wrapping import is_wrapped, wrap


class Trainer:
    def step(self, batch, metrics):
        return batch + 1


def _add_ten(original):
    def step(self, batch, metrics):
        return original(self, batch, metrics) + 10

    return step


def test_wraps_a_method_once_and_keeps_its_name():
    cls = type("T", (Trainer,), {})
    wrap(cls, "step", ["self", "batch"], _add_ten)
    wrap(cls, "step", ["self", "batch"], _add_ten)  # a hook run twice must not wrap twice
    assert cls().step(1, {}) == 12
    assert cls.step.__name__ == "step" and is_wrapped(cls.step)


def test_wraps_a_module_function():
    module = types.ModuleType("fake_verl_module")
    module.get_env = lambda config=None: {"a": 1}
    wrap(module, "get_env", ["config"], lambda original: lambda config=None: {**original(config), "b": 2})
    assert module.get_env() == {"a": 1, "b": 2}


def test_refuses_a_signature_it_was_not_written_for_and_names_the_function():
    cls = type("T", (Trainer,), {})
    expected = r"T\.step\(self, batch, metrics\) is not the signature .* start with self, data"
    with pytest.raises(RuntimeError, match=expected):
        wrap(cls, "step", ["self", "data"], _add_ten)
    assert not is_wrapped(cls.step) and cls().step(1, {}) == 2


def _times_two(original):
    def step(self, batch, metrics):
        return original(self, batch, metrics) * 2

    return step


def test_two_shims_stack_on_one_method_and_each_installs_once():
    cls = type("T", (Trainer,), {})
    wrap(cls, "step", ["self", "batch"], _add_ten)
    wrap(cls, "step", ["self", "batch"], _times_two)
    wrap(cls, "step", ["self", "batch"], _add_ten)  # each shim's hook may run again: no third layer
    wrap(cls, "step", ["self", "batch"], _times_two)
    assert cls().step(1, {}) == (1 + 1 + 10) * 2
    assert cls.step.__skpo_wrapped__ == {f"{__name__}._add_ten", f"{__name__}._times_two"}
