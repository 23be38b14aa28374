"""Every route of the predictive server answers 401 without credentials and 403 without the data-plane action,
except the declared public probes (the Swagger UI page and its static assets carry no data)."""
import pytest

from foundry_inference.apps.predictive.server import make_app
from foundry_inference.apps.predictive.settings import PredictiveSettings
from foundry_inference.auth.service import AuthService
from foundry_inference.auth.settings import AuthSettings
from tests.support import models
from tests.support.oidc_issuer import OidcIssuer
from tests.support.routes import PUBLIC_PATHS, route_coverage_failures
from tests.support.servers import ThreadedServer

pytestmark = pytest.mark.integration


def test_every_predictive_route_is_protected():
    model = models.iris_logreg()
    with OidcIssuer() as issuer:
        auth = AuthService.from_settings(AuthSettings(mode="entra", tenant_id=issuer.tenant_id,
                                                      client_id=issuer.client_id, authority=issuer.authority))
        settings = PredictiveSettings.from_env({"FOUNDRY_MODEL_PATH": model.path})
        server = ThreadedServer(lambda: make_app(settings, auth=auth)).start()
        try:
            no_action = {"Authorization": f"Bearer {issuer.mint(app=True, roles=['Some.Other.Role'])}"}
            failures = route_coverage_failures(server.url, server.app, forbidden_headers=no_action,
                                               public_paths=PUBLIC_PATHS | {"/docs", "/docs/static",
                                                                            "/docs/static/x"})
        finally:
            server.stop()
    assert failures == []
