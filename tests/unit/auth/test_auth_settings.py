"""Settings from the environment: defaults, every mode, and fail-fast messages that name the variable."""
import json

import pytest

from foundry_inference.auth.settings import AuthConfigError, AuthSettings

pytestmark = pytest.mark.unit

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "6e5a1b2c-3d4e-4f50-8a9b-0c1d2e3f4a5b"


def env(**kw):
    return {f"FOUNDRY_{k}": v for k, v in kw.items()}


def test_defaults_for_a_data_plane_pod():
    s = AuthSettings.from_env(env(API_KEYS_DIR="/var/run/keys", DEPLOYMENT_NAME="phi4"))
    assert (s.mode, s.plane, s.key_reload_s, s.authz, s.authz_cache_ttl_s) == ("api-key", "data", 2.0, "roles", 300.0)
    assert s.authority == "https://login.microsoftonline.com"


def test_entra_both_and_authorizers():
    s = AuthSettings.from_env(env(AUTH_MODE="BOTH", API_KEYS_DIR="/k", ENTRA_TENANT_ID=TENANT, ENTRA_CLIENT_ID=CLIENT,
                                  ENTRA_AUTHORITY="http://127.0.0.1:9999/", AUTHZ="azure",
                                  AZURE_SCOPE="/subscriptions/s/resourceGroups/r", AUTHZ_CACHE_TTL="60"))
    assert s.uses_keys and s.uses_entra and s.authority == "http://127.0.0.1:9999" and s.authz_cache_ttl_s == 60


def test_none_mode_needs_nothing():
    assert AuthSettings.from_env(env(AUTH_MODE="none")).mode == "none"


def test_role_table_inline_and_file(tmp_path):
    table = {"roles": {"r": ["deployments/read"]}}
    assert AuthSettings.from_env(env(AUTH_MODE="none", AUTHZ_ROLES=json.dumps(table))).role_table["roles"] == \
        table["roles"]
    f = tmp_path / "roles.json"
    f.write_text(json.dumps({"groups": {"g": ["*"]}}))
    assert AuthSettings.from_env(env(AUTH_MODE="none", AUTHZ_ROLES_FILE=str(f))).role_table["groups"] == {"g": ["*"]}


@pytest.mark.parametrize("variables,names", [
    (env(AUTH_MODE="jwt"), "FOUNDRY_AUTH_MODE"),
    (env(AUTH_MODE="api-key"), "FOUNDRY_API_KEYS_DIR"),
    (env(AUTH_MODE="entra", ENTRA_CLIENT_ID=CLIENT), "FOUNDRY_ENTRA_TENANT_ID"),
    (env(AUTH_MODE="entra", ENTRA_TENANT_ID=TENANT), "FOUNDRY_ENTRA_CLIENT_ID"),
    (env(AUTH_MODE="entra", ENTRA_TENANT_ID="contoso.com", ENTRA_CLIENT_ID=CLIENT), "GUID"),
    (env(AUTH_MODE="entra", ENTRA_TENANT_ID=TENANT, ENTRA_CLIENT_ID=CLIENT, ENTRA_AUTHORITY="login.example"),
     "FOUNDRY_ENTRA_AUTHORITY"),
    (env(AUTH_MODE="entra", ENTRA_TENANT_ID=TENANT, ENTRA_CLIENT_ID=CLIENT, AUTHZ="azure"), "FOUNDRY_AZURE_SCOPE"),
    (env(API_KEYS_DIR="/k", API_KEYS_RELOAD_S="30"), "FOUNDRY_API_KEYS_RELOAD_S"),
    (env(API_KEYS_DIR="/k", AUTHZ_CACHE_TTL="five minutes"), "FOUNDRY_AUTHZ_CACHE_TTL"),
    (env(API_KEYS_DIR="/k", AUTHZ="opa"), "FOUNDRY_AUTHZ"),
    (env(API_KEYS_DIR="/k", AUTH_PLANE="both"), "FOUNDRY_AUTH_PLANE"),
    (env(API_KEYS_DIR="/k", AUTHZ_ROLES="{not json"), "FOUNDRY_AUTHZ_ROLES"),
    (env(API_KEYS_DIR="/k", AUTHZ_ROLES='{"roles": {"r": "deployments/read"}}'), "FOUNDRY_AUTHZ_ROLES"),
    (env(API_KEYS_DIR="/k", AUTHZ_ROLES_FILE="/no/such/file"), "FOUNDRY_AUTHZ_ROLES_FILE"),
])
def test_bad_values_fail_fast_naming_the_variable(variables, names):
    with pytest.raises(AuthConfigError) as err:
        AuthSettings.from_env(variables)
    assert names in str(err.value)
