"""The Tornado adapter: the only module of auth/ that knows Tornado.

    class ChatHandler(AuthMixin, BaseHandler):          # protected: needs the data-plane action
        ...
    class HealthHandler(AuthMixin, BaseHandler):
        public = True                                    # explicit; only liveness/readiness and /v1/models

Deny by default: a handler using the mixin that declares nothing is authenticated and authorized from its HTTP
method and plane. `prepare()` raises AuthError subclasses; apps/base.py renders them in the server's envelope (401s
carry `WWW-Authenticate: Bearer`). The application must carry an AuthService in settings["auth"] (see `auth_settings`).
"""
import inspect

from foundry_inference.auth import actions
from foundry_inference.auth.principal import Resource
from foundry_inference.auth.service import AuthService


class AuthMixin:
    public = False          # True only for declared public routes
    auth_action = None      # an action string, or {HTTP method: action}; default: from method and plane
    plane = None            # "control" | "data"; default: the AuthService's plane

    def auth_resource(self):
        """What the request acts on. Default: the deployment named by the route's `ns`/`namespace` and `name`
        keyword groups (control plane), else the service's own deployment (data plane). Override for other shapes."""
        service = self.settings["auth"]
        plane = self.plane or service.plane
        if plane == actions.DATA:
            return service.default_resource
        kwargs = getattr(self, "path_kwargs", None) or {}
        name = kwargs.get("name")
        return Resource(namespace=kwargs.get("ns") or kwargs.get("namespace"), name=name,
                        verb=actions.verb_for(self.request.method, bool(name)))

    def _auth_action(self):
        if isinstance(self.auth_action, dict):
            return self.auth_action.get(self.request.method)
        return self.auth_action

    def __init_subclass__(cls, **kwargs):
        # A handler that defines its own prepare() and forgets super().prepare() must not skip authentication:
        # wrap it so authentication always runs first (deny by default).
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("prepare")
        if own is not None and not getattr(own, "_runs_auth_first", False):
            async def prepare(self, _own=own):
                await self._authenticate()
                result = _own(self)
                if inspect.isawaitable(result):
                    await result
            prepare._runs_auth_first = True
            prepare.__doc__ = own.__doc__
            cls.prepare = prepare

    async def _authenticate(self):
        if self.public or getattr(self, "_auth_checked", False):
            return
        service = self.settings.get("auth")
        if not hasattr(service, "check"):
            raise RuntimeError("application settings['auth'] must be an AuthService (deny by default)")
        self.current_user = await service.check(
            self.request.method, self.request.headers, plane=self.plane, action=self._auth_action(),
            resource=self.auth_resource())
        self._auth_checked = True

    async def prepare(self):
        await self._authenticate()
        result = super().prepare()
        if inspect.isawaitable(result):
            await result


def auth_settings(service=None):
    """Application settings fragment: `tornado.web.Application(routes, **auth_settings())`."""
    return {"auth": service or AuthService.from_settings()}
