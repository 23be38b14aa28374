"""Request-level auth through real Tornado servers on loopback ports: status codes, the three error envelopes
(control plane / OpenAI / predictive, docs/api.md decision 5), headers, public routes, rotation and outages."""
import concurrent.futures
import json
import socket
import time

import pytest
import requests
import tornado.web

from foundry_inference.apps.base import BaseHandler, openai_envelope, predictive_envelope
from foundry_inference.auth.service import AuthService
from foundry_inference.auth.settings import AuthSettings
from foundry_inference.auth.tornado import AuthMixin
from tests.support.oidc_issuer import LoopbackServer, OidcIssuer

pytestmark = pytest.mark.integration

A, B = "a" * 64, "b" * 64


class Whoami(AuthMixin, BaseHandler):
    """Echoes the principal. Its prepare() does not call super(): the mixin still authenticates first."""

    def prepare(self):
        self.prepared = True

    def get(self, *args, **kwargs):
        self.write_json({"identity": self.current_user.identity, "kind": self.current_user.kind,
                         "prepared": self.prepared})

    post = put = patch = delete = get


class Public(AuthMixin, BaseHandler):
    public = True

    def get(self):
        self.write_json({"object": "list", "data": [], "user": self.current_user})


def app_for(service, envelope=None, base=BaseHandler):
    handler_base = type("EnvelopeBase", (base,), {"envelope": staticmethod(envelope)}) if envelope else base
    whoami = type("Whoami", (AuthMixin, handler_base), dict(Whoami.__dict__))
    public = type("Public", (AuthMixin, handler_base), dict(Public.__dict__))
    return tornado.web.Application([
        (r"/v1/models", public),
        (r"/healthz", public),
        (r"/v1/chat/completions", whoami),
        (r"/api/v1/namespaces/(?P<ns>[^/]+)/deployments/(?P<name>[^/]+)", whoami),
    ], auth=service)


@pytest.fixture(scope="module")
def issuer():
    with OidcIssuer() as iss:
        yield iss


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    d.mkdir()
    (d / "primary-key").write_text(A)
    (d / "secondary-key").write_text(B)
    return d


def serve(settings, envelope=None):
    return LoopbackServer(app_for(AuthService.from_settings(settings), envelope))


def data_settings(issuer, keys, **kw):
    values = dict(mode="both", plane="data", api_keys_dir=str(keys), deployment_name="phi4",
                  deployment_namespace="default", tenant_id=issuer.tenant_id, client_id=issuer.client_id,
                  authority=issuer.authority, jwks_refresh_min_s=0.0)
    values.update(kw)
    return AuthSettings(**values)


@pytest.fixture
def chat(issuer, keys):
    with serve(data_settings(issuer, keys), openai_envelope) as server:
        yield server


def bearer(value):
    return {"Authorization": f"Bearer {value}"}


# --- the chat server: OpenAI envelope --------------------------------------------------------------------------------

def test_missing_credentials_openai_envelope(chat):
    r = requests.post(chat.url + "/v1/chat/completions", json={})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert body["error"]["code"] == "missing_credentials" and body["error"]["type"] == "Unauthorized"
    assert body["error"]["message"]


@pytest.mark.parametrize("headers", [{"api-key": A}, {"X-API-Key": B}, bearer(A), bearer(B)])
def test_each_key_header_works(chat, headers):
    r = requests.post(chat.url + "/v1/chat/completions", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "deployment_key" and r.json()["prepared"] is True


def test_ambiguous_is_400(chat):
    r = requests.post(chat.url + "/v1/chat/completions", headers={**bearer(A), "api-key": A})
    assert r.status_code == 400 and r.json()["error"]["code"] == "ambiguous_auth"
    assert "WWW-Authenticate" not in r.headers


def test_invalid_key_and_invalid_token(chat, issuer):
    r = requests.post(chat.url + "/v1/chat/completions", headers={"api-key": "nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["WWW-Authenticate"] == "Bearer"
    token = issuer.mint(exp=int(time.time()) - 3600)
    r = requests.post(chat.url + "/v1/chat/completions", headers=bearer(token))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"
    assert "expired" in r.json()["error"]["message"] and token not in r.text


def test_jwt_with_and_without_the_data_action(chat, issuer):
    ok = issuer.mint(roles=["Foundry.User"], oid="0000-user")
    r = requests.post(chat.url + "/v1/chat/completions", headers=bearer(ok))
    assert r.status_code == 200 and r.json() == {"identity": "0000-user", "kind": "user", "prepared": True}
    r = requests.post(chat.url + "/v1/chat/completions", headers=bearer(issuer.mint()))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_permissions"


def test_public_routes_need_nothing(chat):
    for path in ("/v1/models", "/healthz"):
        r = requests.get(chat.url + path)
        assert r.status_code == 200 and r.json()["user"] is None


@pytest.mark.parametrize("headers", [
    {"api-key": "k" * 20_000},
    bearer("k" * 20_000),
    bearer("x" * 10_000 + "." + "y" * 10_000 + ".z"),
    bearer("\xff\xfe garbage \xe9"),
    bearer("a.b.c"),
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer"},
])
def test_oversized_and_garbage_headers_are_4xx_never_500(chat, headers):
    r = requests.post(chat.url + "/v1/chat/completions", headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] in ("invalid_api_key", "invalid_token")


def test_control_characters_are_refused_by_the_http_parser(chat):
    r = requests.post(chat.url + "/v1/chat/completions", headers=bearer("abc\x01def"))
    assert r.status_code == 400          # Tornado's parser rejects the request before any handler runs


def test_header_beyond_the_server_limit_is_rejected_cleanly(chat):
    try:
        r = requests.post(chat.url + "/v1/chat/completions", headers={"api-key": "k" * 100_000})
    except requests.ConnectionError:
        return          # Tornado closes a connection whose headers exceed max_header_size: no 500, no hang
    assert r.status_code in (400, 401, 431)


def test_key_rotation_over_http_without_restart(issuer, keys):
    with serve(data_settings(issuer, keys, key_reload_s=1.0), openai_envelope) as server:
        url = server.url + "/v1/chat/completions"
        assert requests.post(url, headers={"api-key": A}).status_code == 200
        (keys / "primary-key").write_text("c" * 64)
        start = time.monotonic()
        while requests.post(url, headers={"api-key": "c" * 64}).status_code != 200:
            assert requests.post(url, headers={"api-key": B}).status_code == 200
            assert time.monotonic() - start < 5
            time.sleep(0.1)
        assert requests.post(url, headers={"api-key": A}).status_code == 401


# --- outages -------------------------------------------------------------------------------------------------------

def test_jwks_down_nothing_cached_is_503_then_cache_keeps_working(keys):
    with OidcIssuer() as iss, serve(data_settings(iss, keys), openai_envelope) as server:
        url = server.url + "/v1/chat/completions"
        token = bearer(iss.mint(roles=["Foundry.User"]))
        iss.available = False
        r = requests.post(url, headers=token)
        assert r.status_code == 503 and r.json()["error"]["code"] == "rbac_check_unavailable"
        assert r.headers["Retry-After"] == "5"
        iss.available = True
        time.sleep(2.1)                               # the empty-cache retry backoff
        assert requests.post(url, headers=token).status_code == 200
        iss.stop()
        assert requests.post(url, headers=bearer(iss.mint(roles=["Foundry.User"]))).status_code == 200


def test_slow_issuer_does_not_block_other_requests(keys):
    with OidcIssuer() as iss, serve(data_settings(iss, keys), openai_envelope) as server:
        iss.delay_s = 1.0
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            slow = pool.submit(requests.post, server.url + "/v1/chat/completions",
                               headers=bearer(iss.mint(roles=["Foundry.User"])))
            time.sleep(0.2)
            t0 = time.monotonic()
            assert requests.get(server.url + "/healthz").status_code == 200
            assert requests.post(server.url + "/v1/chat/completions", headers={"api-key": A}).status_code == 200
            assert time.monotonic() - t0 < 0.5
            assert slow.result().status_code == 200


# --- control plane and predictive envelopes -------------------------------------------------------------------------

def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_control_plane_envelope_and_method_actions(issuer, tmp_path):
    admin = tmp_path / "admin-key"
    admin.write_text("admin-secret")
    settings = AuthSettings(mode="both", plane="control", admin_key_file=str(admin), tenant_id=issuer.tenant_id,
                            client_id=issuer.client_id, authority=issuer.authority)
    with serve(settings) as server:
        url = server.url + "/api/v1/namespaces/default/deployments/phi4"
        r = requests.get(url)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert r.json() == {"error": "Unauthorized", "message": r.json()["message"],
                            "details": {"code": "missing_credentials"}}
        reader = bearer(issuer.mint(app=True, roles=["Foundry.Reader"]))
        assert requests.get(url, headers=reader).status_code == 200
        r = requests.delete(url, headers=reader)
        assert r.status_code == 403
        assert r.json()["error"] == "Forbidden" and r.json()["details"] == {"code": "insufficient_permissions"}
        assert "deployments/delete" in r.json()["message"]
        r = requests.put(url, headers={**reader, "api-key": "admin-secret"})
        assert r.status_code == 400 and r.json()["error"] == "BadRequest"
        assert r.json()["details"] == {"code": "ambiguous_auth"}
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            assert requests.request(method, url, headers={"api-key": "admin-secret"}).status_code == 200


def test_control_plane_503_when_the_authorizer_is_unreachable(issuer):
    settings = AuthSettings(mode="entra", plane="control", tenant_id=issuer.tenant_id, client_id=issuer.client_id,
                            authority=issuer.authority, authz="azure", azure_scope="/subscriptions/s",
                            azure_endpoint=f"http://127.0.0.1:{_closed_port()}", http_timeout_s=1.0)
    with serve(settings) as server:
        r = requests.get(server.url + "/api/v1/namespaces/default/deployments/phi4",
                         headers=bearer(issuer.mint(app=True)))
        assert r.status_code == 503 and r.headers["Retry-After"] == "5"
        assert r.json()["error"] == "ServiceUnavailable" and r.json()["details"] == {"code": "rbac_check_unavailable"}


def test_predictive_envelope(issuer, keys):
    with serve(data_settings(issuer, keys, mode="api-key"), predictive_envelope) as server:
        url = server.url + "/v1/chat/completions"
        r = requests.post(url)
        assert r.status_code == 401 and r.json() == {"detail": r.json()["detail"], "code": "missing_credentials"}
        r = requests.post(url, headers={"api-key": "wrong"})
        assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
        r = requests.post(url, headers=bearer(issuer.mint()))
        assert r.status_code == 401 and r.json()["code"] == "invalid_token"
        assert requests.post(url, headers={"api-key": A}).status_code == 200


def test_mode_none_allows_all(issuer):
    with serve(AuthSettings(mode="none")) as server:
        r = requests.delete(server.url + "/api/v1/namespaces/default/deployments/phi4")
        assert r.status_code == 200 and json.loads(r.text)["kind"] == "anonymous"
