"""Route coverage: every route of a demo app built from the real AuthMixin + BaseHandler answers 401 without
credentials and 403 without the action, except the declared public routes. Each server applies the same helper
(tests/support/routes.py) to its own application."""
import pytest
import tornado.web

from foundry_inference.apps.base import BaseHandler, NotFoundHandler
from foundry_inference.auth.service import AuthService
from foundry_inference.auth.settings import AuthSettings
from foundry_inference.auth.tornado import AuthMixin
from tests.support.oidc_issuer import LoopbackServer, OidcIssuer
from tests.support.routes import iter_routes, route_coverage_failures

pytestmark = pytest.mark.integration


class Health(AuthMixin, BaseHandler):
    public = True

    def get(self):
        self.write_json({"status": "healthy"})


class Deployments(AuthMixin, BaseHandler):
    def get(self, ns=None):
        self.write_json({"deployments": []})

    def post(self, ns):
        self.write_json({}, 201)


class Deployment(AuthMixin, BaseHandler):
    def get(self, ns, name):
        self.write_json({"name": name})

    def put(self, ns, name):
        self.write_json({"name": name})

    def patch(self, ns, name):
        self.write_json({"name": name})

    def delete(self, ns, name):
        self.write_json({"status": "deleting"}, 202)


class Forgetful(AuthMixin, BaseHandler):
    """Declares nothing and overrides prepare() without calling super(): still protected."""

    async def prepare(self):
        self.ready = True

    def post(self, ns, name, key_type):
        self.write_json({})


def demo_app(service):
    return tornado.web.Application([
        (r"/healthz", Health),
        (r"/readyz", Health),
        (r"/api/v1/deployments", Deployments),
        (r"/api/v1/namespaces/(?P<ns>[^/]+)/deployments", Deployments),
        (r"/api/v1/namespaces/(?P<ns>[^/]+)/deployments/(?P<name>[^/]+)", Deployment),
        (r"/api/v1/namespaces/(?P<ns>[^/]+)/deployments/(?P<name>[^/]+)/keys/(?P<key_type>primary|secondary)/rotate",
         Forgetful),
    ], default_handler_class=NotFoundHandler, auth=service)


@pytest.fixture(scope="module")
def issuer():
    with OidcIssuer() as iss:
        yield iss


@pytest.fixture(scope="module")
def served(issuer):
    svc = AuthService.from_settings(AuthSettings(mode="entra", plane="control", tenant_id=issuer.tenant_id,
                                                 client_id=issuer.client_id, authority=issuer.authority))
    app = demo_app(svc)
    with LoopbackServer(app) as server:
        yield app, server


def test_every_route_is_covered(served, issuer):
    app, server = served
    # a valid token whose roles grant nothing on this server
    no_action = {"Authorization": f"Bearer {issuer.mint(app=True, roles=['Some.Other.Role'])}"}
    assert route_coverage_failures(server.url, app, forbidden_headers=no_action) == []


def test_the_walker_sees_every_route_and_method(served):
    app, _ = served
    routes = {r.pattern: r for r in iter_routes(app)}
    assert len(routes) == 6
    rotate = next(r for r in routes.values() if r.handler is Forgetful)
    assert rotate.path == "/api/v1/namespaces/x/deployments/x/keys/primary/rotate"
    assert rotate.methods == ("POST",) and not rotate.public
    assert routes["/api/v1/namespaces/(?P<ns>[^/]+)/deployments/(?P<name>[^/]+)$"].methods == \
        ("GET", "PUT", "PATCH", "DELETE")


def test_a_handler_without_the_mixin_is_reported(issuer):
    class Naked(BaseHandler):
        def get(self):
            self.write_json({})

    svc = AuthService.from_settings(AuthSettings(mode="none"))
    app = tornado.web.Application([(r"/naked", Naked)], auth=svc)
    with LoopbackServer(app) as server:
        failures = route_coverage_failures(server.url, app, forbidden_headers={})
    assert failures == ["/naked$: Naked does not use AuthMixin"]


def test_an_undeclared_public_route_is_reported():
    class Sneaky(AuthMixin, BaseHandler):
        public = True

        def get(self):
            self.write_json({})

    svc = AuthService.from_settings(AuthSettings(mode="none"))
    app = tornado.web.Application([(r"/debug/vars", Sneaky)], auth=svc)
    assert route_coverage_failures("http://unused", app, forbidden_headers={}) == \
        ["/debug/vars$: public, but not one of the declared public paths"]
