"""Control plane authentication and authorization: every route denies by default; the admin key and Entra ID
tokens with the right app role work; store outages are 503 with Retry-After."""
import socket

import kubernetes
import pytest
import requests

from foundry_inference.apps.controlplane.app import make_app
from foundry_inference.apps.controlplane.settings import ControlPlaneSettings
from foundry_inference.auth.service import AuthService
from foundry_inference.auth.settings import AuthSettings
from foundry_inference.store.kube import KubernetesStore
from tests.integration.controlplane.conftest import ADMIN_KEY, install_catalog
from tests.support.oidc_issuer import OidcIssuer
from tests.support.routes import PUBLIC_PATHS, route_coverage_failures
from tests.support.servers import ThreadedServer

pytestmark = pytest.mark.unit

DOCS_PUBLIC = PUBLIC_PATHS | {"/docs", "/docs/static", "/docs/static/x"}  # UI code only; /openapi.json is protected


@pytest.fixture(scope="module")
def issuer():
    with OidcIssuer() as iss:
        yield iss


@pytest.fixture
def entra_cp(issuer, embedded_store):
    install_catalog(embedded_store, "foundry-local-operator")
    auth = AuthService.from_settings(AuthSettings(mode="entra", plane="control", tenant_id=issuer.tenant_id,
                                                  client_id=issuer.client_id, authority=issuer.authority))
    server = ThreadedServer(lambda: make_app(embedded_store, ControlPlaneSettings(), auth=auth)).start()
    yield server
    server.stop()


def test_every_route_answers_401_then_403(entra_cp, issuer):
    no_action = {"Authorization": f"Bearer {issuer.mint(app=True, roles=['Some.Other.Role'])}"}
    failures = route_coverage_failures(entra_cp.url, entra_cp.app, forbidden_headers=no_action,
                                       public_paths=DOCS_PUBLIC)
    assert failures == []


def test_reader_role_reads_but_cannot_write(entra_cp, issuer):
    reader = {"Authorization": f"Bearer {issuer.mint(app=True, roles=['Foundry.Reader'])}"}
    assert requests.get(f"{entra_cp.url}/api/v1/models", headers=reader, timeout=10).status_code == 200
    assert requests.get(f"{entra_cp.url}/openapi.json", headers=reader, timeout=10).status_code == 200
    resp = requests.post(f"{entra_cp.url}/api/v1/namespaces/default/deployments", headers=reader, timeout=10,
                         json={"name": "x", "spec": {"model": {"ref": "m"}, "compute": "cpu"}})
    assert resp.status_code == 403
    body = resp.json()
    assert body["error"] == "Forbidden" and body["details"]["code"] == "insufficient_permissions"
    contributor = {"Authorization": f"Bearer {issuer.mint(app=True, roles=['Foundry.Contributor'])}"}
    resp = requests.post(f"{entra_cp.url}/api/v1/namespaces/default/deployments", headers=contributor, timeout=10,
                         json={"name": "x", "spec": {"model": {"ref": "m"}, "compute": "cpu"}})
    assert resp.status_code == 201, resp.text


def test_attack_reader_role_cannot_read_or_rotate_keys(entra_cp, issuer, embedded_store):
    from tests.integration.test_auth_sar import keys_store
    keys_store(embedded_store, "default", "phi4")
    base = f"{entra_cp.url}/api/v1/namespaces/default/deployments/phi4"
    reader = {"Authorization": f"Bearer {issuer.mint(app=True, roles=['Foundry.Reader'])}"}
    assert requests.get(base, headers=reader, timeout=10).status_code == 200
    for method, path in (("GET", "/keys"), ("POST", "/keys/primary/rotate")):
        resp = requests.request(method, base + path, headers=reader, timeout=10)
        assert resp.status_code == 403 and resp.json()["details"]["code"] == "insufficient_permissions", resp.text
    contributor = {"Authorization": f"Bearer {issuer.mint(app=True, roles=['Foundry.Contributor'])}"}
    keys = requests.get(base + "/keys", headers=contributor, timeout=10)
    assert keys.status_code == 200 and keys.json()["primaryKey"]["value"] == "pk"
    assert requests.post(base + "/keys/primary/rotate", headers=contributor, timeout=10).status_code == 200


def test_admin_key_and_auth_errors(cp):
    url = cp.url + "/api/v1/models"
    missing = requests.get(url, timeout=10)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["error"] == "Unauthorized" and missing.json()["details"]["code"] == "missing_credentials"
    wrong = requests.get(url, headers={"Authorization": "Bearer fndry-pk-not-the-key"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["details"]["code"] == "invalid_api_key"
    both = requests.get(url, headers={"Authorization": f"Bearer {ADMIN_KEY}", "api-key": ADMIN_KEY}, timeout=10)
    assert both.status_code == 400 and both.json()["details"]["code"] == "ambiguous_auth"
    for headers in ({"Authorization": f"Bearer {ADMIN_KEY}"}, {"api-key": ADMIN_KEY}, {"X-API-Key": ADMIN_KEY}):
        assert requests.get(url, headers=headers, timeout=10).status_code == 200


def test_docs_are_served_from_local_assets(cp):
    page = requests.get(cp.url + "/docs", timeout=10)
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text and "http" not in page.text.split(
        "<body>")[0].replace("http-equiv", "")
    js = requests.get(cp.url + "/docs/static/swagger-ui-bundle.js", timeout=10)
    assert js.status_code == 200 and len(js.content) > 100_000
    spec = cp.api("GET", "/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/api/v1/namespaces/{ns}/deployments/{name}" in spec["paths"]


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_apiserver_is_503_with_retry_after(tmp_path):
    cfg = kubernetes.client.Configuration()
    cfg.host, cfg.verify_ssl = f"https://127.0.0.1:{_closed_port()}", False
    store = KubernetesStore(configuration=cfg, timeout=(0.5, 1))
    key = tmp_path / "admin-key"
    key.write_text(ADMIN_KEY)
    auth = AuthService.from_settings(AuthSettings(mode="api-key", plane="control", admin_key_file=str(key)))
    server = ThreadedServer(lambda: make_app(store, ControlPlaneSettings(), auth=auth)).start()
    try:
        resp = requests.get(server.url + "/api/v1/deployments", headers={"api-key": ADMIN_KEY}, timeout=10)
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
        assert resp.json()["error"] == "ServiceUnavailable"
        ready = requests.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["kubernetes"] == "disconnected"
    finally:
        server.stop()
