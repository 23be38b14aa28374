"""A missing prerequisite skips a test on a developer machine and fails it under CI (CI=true, as .ci/run runs)."""
import pytest

from tests.support import require

pytestmark = pytest.mark.unit


@pytest.fixture
def developer(monkeypatch):
    for name in ("CI", "FOUNDRY_REQUIRE_ALL", "FOUNDRY_REQUIRE_KUBE", "FOUNDRY_REQUIRE_MODELS"):
        monkeypatch.delenv(name, raising=False)


def test_a_missing_tool_skips_on_a_developer_machine(developer):
    with pytest.raises(pytest.skip.Exception, match="no-such-tool-zz is not installed"):
        require.require_tool("no-such-tool-zz", "apt-get install it")


@pytest.mark.parametrize("env", [{"CI": "true"}, {"FOUNDRY_REQUIRE_ALL": "1"}])
def test_a_missing_tool_or_package_fails_under_ci(developer, monkeypatch, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(pytest.fail.Exception, match="missing: no-such-tool-zz"):
        require.require_tool("no-such-tool-zz")
    with pytest.raises(pytest.fail.Exception, match="no_such_module_zz"):
        require.require_module("no_such_module_zz")


def test_a_topic_switch_makes_only_its_topic_strict(developer, monkeypatch):
    monkeypatch.setenv("FOUNDRY_REQUIRE_KUBE", "1")
    with pytest.raises(pytest.fail.Exception):
        require.unavailable("kube binaries", topic="kube")
    with pytest.raises(pytest.skip.Exception):
        require.unavailable("a model", topic="models")


def test_a_broken_project_module_always_fails(developer):
    with pytest.raises(pytest.fail.Exception, match="the project's own module"):
        require.require_module("foundry_inference.no_such_module")


def test_present_things_are_returned(developer):
    assert require.require_tool("sh").endswith("/sh")
    assert require.require_module("json").dumps([]) == "[]"
