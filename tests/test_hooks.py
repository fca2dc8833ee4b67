"""Post-import hooks: run after the module body, once, and report failures loudly."""

import sys

import pytest

from skpo_verl import hooks as _hooks
from skpo_verl import verl_version


@pytest.fixture
def fake_module(tmp_path, monkeypatch):
    package = tmp_path / "skpo_hook_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "target.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "skpo_hook_probe.target"
    for name in ("skpo_hook_probe.target", "skpo_hook_probe"):
        sys.modules.pop(name, None)


def test_hook_runs_after_the_module_body_when_the_module_is_first_imported(fake_module):
    seen = []
    _hooks.when_imported(fake_module, lambda module: seen.append(module.VALUE + 1), name="probe-add")
    assert seen == []
    __import__(fake_module)
    assert seen == [42]


def test_hook_on_an_already_imported_module_runs_immediately(fake_module):
    __import__(fake_module)
    seen = []
    _hooks.when_imported(fake_module, lambda module: seen.append(module.VALUE), name="probe-now")
    assert seen == [41]


def test_a_failing_hook_is_printed_and_recorded(fake_module, capsys):
    def broken(module):
        raise RuntimeError("boom")

    _hooks.when_imported(fake_module, broken, name="probe-broken")
    __import__(fake_module)
    assert "shim probe-broken failed to install: RuntimeError: boom" in capsys.readouterr().err
    assert _hooks.failed_shims()["probe-broken"] == "RuntimeError: boom"
    _hooks._failures.pop("probe-broken")


def test_version_gate_names_the_installed_and_supported_versions(monkeypatch):
    monkeypatch.setattr(verl_version, "installed_verl_version", lambda: "0.10.0")
    with pytest.raises(verl_version.UnsupportedVerlVersion, match=r"adapts verl 0\.9\.1 internals, but verl 0\.10\.0"):
        verl_version.require_verl_version("probe")


def test_setup_py_pins_the_version_the_gate_checks():
    import importlib.metadata

    requirements = importlib.metadata.requires("skpo-verl")
    assert f"verl=={verl_version.SUPPORTED_VERL_VERSION}" in requirements
