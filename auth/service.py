"""AuthService: authenticator + authorizer + action mapping, the one object a server puts in its settings["auth"].

`check()` is the whole per-request decision, framework-free: headers in, Principal out, or an AuthError raised.
"""
import logging

from foundry_inference.auth import actions
from foundry_inference.auth.apikeys import ApiKeyAuthenticator
from foundry_inference.auth.authenticator import Authenticator
from foundry_inference.auth.authz import AllowAll, CachedAuthorizer, KeyGrantAuthorizer, deny
from foundry_inference.auth.principal import Resource
from foundry_inference.auth.settings import AuthSettings

log = logging.getLogger("foundry_inference.auth")


class AuthService:
    def __init__(self, authenticator, authorizer, *, plane=actions.DATA, default_resource=None):
        if plane not in actions.PLANES:
            raise ValueError(f"plane must be one of {actions.PLANES}")
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.plane = plane
        self.default_resource = default_resource or Resource()

    @classmethod
    def from_settings(cls, settings=None, *, clock=None, sar_api_client=None, azure_token_provider=None):
        """Build everything from AuthSettings (default: AuthSettings.from_env()). Raises AuthConfigError early."""
        settings = settings or AuthSettings.from_env()
        settings.validate()
        if settings.mode == "none":
            log.warning("authentication is DISABLED (FOUNDRY_AUTH_MODE=none): every request is allowed")
            return cls(Authenticator(mode="none"), AllowAll(), plane=settings.plane)
        extra = {"clock": clock} if clock else {}
        api_keys = entra = None
        if settings.uses_keys:
            api_keys = ApiKeyAuthenticator.from_paths(
                keys_dir=settings.api_keys_dir, admin_key_file=settings.admin_key_file,
                deployment=settings.deployment_name, reload_s=settings.key_reload_s, **extra)
        if settings.uses_entra:
            from foundry_inference.auth.entra import EntraTokenValidator
            entra = EntraTokenValidator(
                tenant_id=settings.tenant_id, client_id=settings.client_id, authority=settings.authority,
                required_scope=settings.required_scope, leeway_s=settings.leeway_s,
                token_cache_s=settings.token_cache_s,
                refresh_min_s=settings.jwks_refresh_min_s, ttl_s=settings.jwks_ttl_s,
                timeout_s=settings.http_timeout_s, **extra)
        authenticator = Authenticator(mode=settings.mode, api_keys=api_keys, entra=entra)
        if settings.uses_entra:
            token_authorizer = token_authorizer_from_settings(settings, clock=clock, sar_api_client=sar_api_client,
                                                              azure_token_provider=azure_token_provider)
        else:
            from foundry_inference.auth.authz_roles import RoleTableAuthorizer
            token_authorizer = RoleTableAuthorizer({})     # no token principals can exist in api-key mode
        authorizer = KeyGrantAuthorizer(token_authorizer)
        resource = Resource(namespace=settings.deployment_namespace, name=settings.deployment_name)
        return cls(authenticator, authorizer, plane=settings.plane, default_resource=resource)

    def action_for(self, method, plane=None):
        return actions.action_for(method, plane or self.plane)

    async def authenticate(self, headers):
        return await self.authenticator.authenticate(headers)

    async def authorize(self, principal, action, resource=None):
        await self.authorizer.authorize(principal, action, resource or self.default_resource)

    async def check(self, method, headers, *, plane=None, action=None, resource=None):
        """Authenticate, pick the action (explicit `action`, else from method and plane), authorize; the Principal."""
        principal = await self.authenticator.authenticate(headers)
        action = action or actions.action_for(method, plane or self.plane)
        if action is None:
            raise deny(f"{method} (no action is mapped to this method)")
        await self.authorizer.authorize(principal, action, resource or self.default_resource)
        return principal

    def check_now(self, method, headers):
        """check() for the server's own plane and resource without a suspension, for a hot path that runs no
        coroutine: the Principal, an AuthError raised, or None when only check() can decide (an Entra token, a
        token authorizer). Same decisions as check(): the same credential extraction and key match per request."""
        principal = self.authenticator.authenticate_now(headers)
        if principal is None:
            return None
        action = actions.action_for(method, self.plane)
        if action is None:
            raise deny(f"{method} (no action is mapped to this method)")
        decide = getattr(self.authorizer, "authorize_now", None)
        if decide is None or decide(principal, action, self.default_resource) is None:
            return None
        return principal


def token_authorizer_from_settings(settings, *, clock=None, sar_api_client=None, azure_token_provider=None):
    """The authorizer for Entra principals: the role table, or a cached SubjectAccessReview / Azure checkAccess."""
    if settings.authz == "roles":
        from foundry_inference.auth.authz_roles import RoleTableAuthorizer
        return RoleTableAuthorizer(settings.role_table)
    if settings.authz == "sar":
        from foundry_inference.auth.authz_sar import SubjectAccessReviewBackend
        if sar_api_client is not None:
            backend = SubjectAccessReviewBackend(sar_api_client, timeout_s=settings.http_timeout_s)
        else:
            backend = SubjectAccessReviewBackend.from_kubeconfig(settings.sar_kubeconfig,
                                                                 timeout_s=settings.http_timeout_s)
    else:
        from foundry_inference.auth.authz_azure import AzureCheckAccessBackend, file_token_provider
        if azure_token_provider is None and settings.azure_token_file:
            azure_token_provider = file_token_provider(settings.azure_token_file)
        backend = AzureCheckAccessBackend(
            endpoint=settings.azure_endpoint, scope=settings.azure_scope, api_version=settings.azure_api_version,
            token_provider=azure_token_provider, action_prefix=settings.azure_action_prefix,
            timeout_s=settings.http_timeout_s)
    extra = {"clock": clock} if clock else {}
    return CachedAuthorizer(backend, ttl_s=settings.authz_cache_ttl_s, deny_ttl_s=settings.authz_deny_cache_ttl_s,
                            stale_if_error_s=settings.authz_stale_if_error_s, **extra)
