"""Control plane settings from the environment: defaults, and a message naming the variable for every bad value."""
import pytest

from foundry_inference.apps.controlplane.settings import ControlPlaneSettings, SettingsError
from foundry_inference.config import ConfigurationError

pytestmark = pytest.mark.unit


def test_defaults_and_lists():
    s = ControlPlaneSettings.from_env({"FOUNDRY_WATCH_NAMESPACES": " a, b ,", "FOUNDRY_REGISTRY_ALLOWLIST": "r:5000"})
    assert s.watch_namespaces == ("a", "b") and s.registry_allowlist == ("r:5000",)
    assert (s.operator_namespace, s.max_body_bytes, s.catalog_cache_s, s.read_cache) == \
        ("foundry-local-operator", 1024 * 1024, 2.0, True)
    assert ControlPlaneSettings.from_env({"FOUNDRY_WATCH_NAMESPACES": "*"}).watch_namespaces is None
    assert ControlPlaneSettings.from_env({"FOUNDRY_READ_CACHE": "off"}).read_cache is False


@pytest.mark.parametrize("name, value, message", [
    ("FOUNDRY_MAX_BODY_BYTES", "lots", "FOUNDRY_MAX_BODY_BYTES: expected an integer"),
    ("FOUNDRY_MAX_BODY_BYTES", "10", "FOUNDRY_MAX_BODY_BYTES: 10 is outside 1024..67108864"),
    ("FOUNDRY_CATALOG_CACHE_S", "-1", "FOUNDRY_CATALOG_CACHE_S: -1 is outside"),
    ("FOUNDRY_CATALOG_CACHE_S", "soon", "expected a number"),
    ("FOUNDRY_READ_CACHE", "sometimes", "FOUNDRY_READ_CACHE: expected on/off"),
])
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(SettingsError, match=message) as err:
        ControlPlaneSettings.from_env({name: value})
    assert isinstance(err.value, ConfigurationError)     # the CLI prints it and exits 2
