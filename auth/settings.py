"""Typed auth settings, built once from environment variables; a bad value stops the server at start with a message
that names the variable (never later, on the first request).

Every variable is documented in docs/security.md.
"""
import json
import os
import re
from dataclasses import dataclass, field

from foundry_inference.auth import actions
from foundry_inference.auth.apikeys import DEFAULT_RELOAD_S
from foundry_inference.config import ConfigurationError
from foundry_inference.envreader import EnvReader

MODES = ("api-key", "entra", "both", "none")
AUTHORIZERS = ("roles", "sar", "azure")
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
DEFAULT_CHECKACCESS_API_VERSION = "2018-09-01-preview"
KEY_RELOAD_MAX_S = 5.0   # docs/api.md decision 9: a rotated key works within 5 s

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class AuthConfigError(ConfigurationError):
    """A setting is missing or malformed; raised at start-up."""


@dataclass(frozen=True)
class AuthSettings:
    mode: str = "api-key"
    plane: str = actions.DATA
    # API keys
    api_keys_dir: str = None
    admin_key_file: str = None
    key_reload_s: float = DEFAULT_RELOAD_S
    deployment_name: str = None
    deployment_namespace: str = None
    # Entra ID
    tenant_id: str = None
    client_id: str = None
    authority: str = DEFAULT_AUTHORITY
    required_scope: str = "foundry_access"
    leeway_s: float = 60.0
    jwks_refresh_min_s: float = 60.0
    jwks_ttl_s: float = 24 * 3600.0
    token_cache_s: float = 300.0
    http_timeout_s: float = 5.0
    # authorization
    authz: str = "roles"
    authz_cache_ttl_s: float = 300.0
    authz_deny_cache_ttl_s: float = 30.0
    authz_stale_if_error_s: float = 300.0
    role_table: dict = field(default=None, compare=False)
    sar_kubeconfig: str = None
    azure_endpoint: str = DEFAULT_ARM_ENDPOINT
    azure_scope: str = None
    azure_api_version: str = DEFAULT_CHECKACCESS_API_VERSION
    azure_token_file: str = None
    azure_action_prefix: str = "Microsoft.Kubernetes/connectedClusters"

    @property
    def uses_keys(self):
        return self.mode in ("api-key", "both")

    @property
    def uses_entra(self):
        return self.mode in ("entra", "both")

    @classmethod
    def from_env(cls, env=None, **overrides):
        """Read FOUNDRY_* variables from `env` (default os.environ); `overrides` win (tests, embedded mode)."""
        env = os.environ if env is None else env
        r = _Reader(env)
        values = dict(
            mode=r.choice("FOUNDRY_AUTH_MODE", MODES, "api-key"),
            plane=r.choice("FOUNDRY_AUTH_PLANE", actions.PLANES, actions.DATA),
            api_keys_dir=r.text("FOUNDRY_API_KEYS_DIR"),
            admin_key_file=r.text("FOUNDRY_ADMIN_KEY_FILE"),
            key_reload_s=r.number("FOUNDRY_API_KEYS_RELOAD_S", DEFAULT_RELOAD_S, low=0.0, high=KEY_RELOAD_MAX_S),
            deployment_name=r.text("FOUNDRY_DEPLOYMENT_NAME"),
            deployment_namespace=r.text("FOUNDRY_DEPLOYMENT_NAMESPACE"),
            tenant_id=r.text("FOUNDRY_ENTRA_TENANT_ID"),
            client_id=r.text("FOUNDRY_ENTRA_CLIENT_ID"),
            authority=r.url("FOUNDRY_ENTRA_AUTHORITY", DEFAULT_AUTHORITY),
            required_scope=r.text("FOUNDRY_ENTRA_REQUIRED_SCOPE") or "foundry_access",
            leeway_s=r.number("FOUNDRY_ENTRA_LEEWAY_S", 60.0, low=0.0, high=300.0),
            jwks_refresh_min_s=r.number("FOUNDRY_ENTRA_JWKS_REFRESH_MIN_S", 60.0, low=0.0, high=3600.0),
            jwks_ttl_s=r.number("FOUNDRY_ENTRA_JWKS_TTL_S", 24 * 3600.0, low=1.0, high=7 * 24 * 3600.0),
            token_cache_s=r.number("FOUNDRY_ENTRA_TOKEN_CACHE_S", 300.0, low=0.0, high=3600.0),
            http_timeout_s=r.number("FOUNDRY_AUTH_HTTP_TIMEOUT_S", 5.0, low=0.1, high=60.0),
            authz=r.choice("FOUNDRY_AUTHZ", AUTHORIZERS, "roles"),
            authz_cache_ttl_s=r.number("FOUNDRY_AUTHZ_CACHE_TTL", 300.0, low=0.0, high=86400.0),
            authz_deny_cache_ttl_s=r.number("FOUNDRY_AUTHZ_DENY_CACHE_TTL", 30.0, low=0.0, high=86400.0),
            authz_stale_if_error_s=r.number("FOUNDRY_AUTHZ_STALE_IF_ERROR_S", 300.0, low=0.0, high=86400.0),
            role_table=r.role_table("FOUNDRY_AUTHZ_ROLES", "FOUNDRY_AUTHZ_ROLES_FILE"),
            sar_kubeconfig=r.text("FOUNDRY_AUTHZ_SAR_KUBECONFIG"),
            azure_endpoint=r.url("FOUNDRY_AZURE_CHECKACCESS_ENDPOINT", DEFAULT_ARM_ENDPOINT),
            azure_scope=r.text("FOUNDRY_AZURE_SCOPE"),
            azure_api_version=r.text("FOUNDRY_AZURE_CHECKACCESS_API_VERSION") or DEFAULT_CHECKACCESS_API_VERSION,
            azure_token_file=r.text("FOUNDRY_AZURE_TOKEN_FILE"),
            azure_action_prefix=r.text("FOUNDRY_AZURE_ACTION_PREFIX") or "Microsoft.Kubernetes/connectedClusters",
        )
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self):
        """Cross-field checks; raises AuthConfigError. Also called for settings built in code."""
        if self.mode not in MODES:
            raise AuthConfigError(f"FOUNDRY_AUTH_MODE must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.plane not in actions.PLANES:
            raise AuthConfigError(f"FOUNDRY_AUTH_PLANE must be one of {', '.join(actions.PLANES)}, not {self.plane!r}")
        if self.authz not in AUTHORIZERS:
            raise AuthConfigError(f"FOUNDRY_AUTHZ must be one of {', '.join(AUTHORIZERS)}, not {self.authz!r}")
        if not 0 < self.key_reload_s <= KEY_RELOAD_MAX_S:
            raise AuthConfigError("FOUNDRY_API_KEYS_RELOAD_S must be > 0 and <= 5 (a rotated key works within 5 s)")
        if self.uses_keys and not (self.api_keys_dir or self.admin_key_file):
            raise AuthConfigError(f"FOUNDRY_AUTH_MODE={self.mode} needs FOUNDRY_API_KEYS_DIR (a deployment's key "
                                  "directory) or FOUNDRY_ADMIN_KEY_FILE (the control plane's admin key)")
        if self.uses_entra:
            for name, value in (("FOUNDRY_ENTRA_TENANT_ID", self.tenant_id),
                                ("FOUNDRY_ENTRA_CLIENT_ID", self.client_id)):
                if not value:
                    raise AuthConfigError(f"FOUNDRY_AUTH_MODE={self.mode} needs {name}")
                if not _GUID.match(value):
                    raise AuthConfigError(f"{name} must be a GUID, not {value!r}")
            if not self.required_scope or " " in self.required_scope:
                raise AuthConfigError("FOUNDRY_ENTRA_REQUIRED_SCOPE must be one scope name")
            if self.authz == "azure" and not self.azure_scope:
                raise AuthConfigError("FOUNDRY_AUTHZ=azure needs FOUNDRY_AZURE_SCOPE (the ARM resource id checked)")
            if self.authz == "azure" and not self.azure_scope.startswith("/"):
                raise AuthConfigError("FOUNDRY_AZURE_SCOPE must be an ARM resource id starting with /subscriptions/...")


class _Reader(EnvReader):
    def __init__(self, env):
        super().__init__(env, AuthConfigError)

    def role_table(self, inline_name, file_name):
        inline, path = self.text(inline_name), self.text(file_name)
        if inline and path:
            raise AuthConfigError(f"set {inline_name} or {file_name}, not both")
        if not (inline or path):
            return None
        source = inline_name
        if path:
            source = f"{file_name} ({path})"
            try:
                with open(path, encoding="utf-8") as fh:
                    inline = fh.read()
            except OSError as exc:
                raise AuthConfigError(f"{source}: cannot read: {exc.strerror}") from None
        try:
            table = json.loads(inline)
        except ValueError as exc:
            raise AuthConfigError(f"{source}: not valid JSON: {exc}") from None
        return check_role_table(table, source)


def check_role_table(table, source="role table"):
    """Validate {"roles": {name: [action, ...]}, "groups": {id: [action, ...]}}."""
    if not isinstance(table, dict) or set(table) - {"roles", "groups"}:
        raise AuthConfigError(f"{source}: expected an object with keys 'roles' and/or 'groups'")
    for section in ("roles", "groups"):
        entries = table.get(section, {})
        if not isinstance(entries, dict):
            raise AuthConfigError(f"{source}: '{section}' must map names to lists of actions")
        for name, granted in entries.items():
            if not isinstance(granted, list) or not all(isinstance(a, str) and a for a in granted):
                raise AuthConfigError(f"{source}: {section}[{name!r}] must be a list of action strings")
    return {"roles": dict(table.get("roles", {})), "groups": dict(table.get("groups", {}))}
