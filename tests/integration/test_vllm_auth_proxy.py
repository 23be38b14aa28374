"""A vLLM deployment has the API-key and Entra semantics of our own servers: the real auth proxy
(`foundry-inference auth-proxy`, apps/authproxy.py) in front of a stand-in that speaks vLLM's OpenAI routes (vLLM
itself needs a GPU), called with the official `openai` client."""
import time

import openai
import pytest
import requests

from foundry_inference.apps.authproxy import make_app
from foundry_inference.auth.service import AuthService
from foundry_inference.auth.settings import AuthSettings
from tests.support.oidc_issuer import OidcIssuer
from tests.support.servers import ThreadedServer
from tests.support.vllm_standin import VllmStandIn

pytestmark = pytest.mark.integration

PRIMARY, SECONDARY = "fndry-pk-11111111-2222-4333-8444-555555555555", "fndry-sk-66666666-7777-4888-8999-000000000000"


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "primary-key").write_text(PRIMARY)
    (folder / "secondary-key").write_text(SECONDARY)
    return folder


@pytest.fixture
def vllm():
    with VllmStandIn() as standin:
        yield standin


def proxy(standin, settings):
    return ThreadedServer(lambda: make_app(standin.port, auth=AuthService.from_settings(settings))).start()


def test_attack_vllm_is_not_reachable_without_a_key(vllm, keys):
    server = proxy(vllm, AuthSettings(mode="api-key", api_keys_dir=str(keys), key_reload_s=1,
                                      deployment_name="phi-vllm", deployment_namespace="team-a"))
    try:
        body = {"model": "phi-vllm", "messages": [{"role": "user", "content": "hi"}]}
        url = f"{server.url}/v1/chat/completions"
        for headers in ({}, {"Authorization": "Bearer fndry-pk-wrong"}, {"api-key": "nope"}):
            resp = requests.post(url, json=body, headers=headers, timeout=10)
            assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Bearer", resp.text
            assert resp.json()["error"]["code"] in ("missing_credentials", "invalid_api_key")
        both = requests.post(url, json=body, headers={"Authorization": f"Bearer {PRIMARY}", "api-key": PRIMARY},
                             timeout=10)
        assert both.status_code == 400 and both.json()["error"]["code"] == "ambiguous_auth"
        assert [s for s in vllm.seen if s[0] == "POST"] == []                 # vLLM never saw one of them

        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=PRIMARY)
        answer = client.chat.completions.create(model="phi-vllm", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "Hello from vLLM"
        stream = client.chat.completions.create(model="phi-vllm", messages=[{"role": "user", "content": "hi"}],
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream) == "Hello from vLLM"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{server.url}/v1", api_key="fndry-pk-wrong", max_retries=0).models.retrieve("x")
        # the caller's credentials stay with the proxy
        posted = [headers for method, _path, headers in vllm.seen if method == "POST"]
        assert len(posted) == 2 and not any({k.lower() for k in h} & {"authorization", "api-key"} for h in posted)
        # public, as on our servers
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
        assert requests.get(f"{server.url}/v1/models", timeout=10).json()["data"][0]["id"] == "phi-vllm"

        # a rotated key works within seconds, the old one stops, the other keeps working
        (keys / "primary-key").write_text("fndry-pk-rotated")
        deadline = time.monotonic() + 5
        while requests.get(f"{server.url}/v1/x", headers={"api-key": "fndry-pk-rotated"}, timeout=5).status_code \
                == 401:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert requests.get(f"{server.url}/v1/x", headers={"api-key": PRIMARY}, timeout=5).status_code == 401
        assert requests.get(f"{server.url}/v1/x", headers={"api-key": SECONDARY}, timeout=5).status_code == 404
    finally:
        server.stop()


def test_entra_tokens_need_the_data_action(vllm, keys):
    with OidcIssuer() as issuer:
        server = proxy(vllm, AuthSettings(mode="both", api_keys_dir=str(keys), tenant_id=issuer.tenant_id,
                                          client_id=issuer.client_id, authority=issuer.authority,
                                          deployment_name="phi-vllm", deployment_namespace="team-a"))
        try:
            url = f"{server.url}/v1/chat/completions"
            body = {"model": "phi-vllm", "messages": [{"role": "user", "content": "hi"}]}
            user = requests.post(url, json=body, timeout=10,
                                 headers={"Authorization": f"Bearer {issuer.mint(app=True, roles=['Foundry.User'])}"})
            assert user.status_code == 200, user.text
            reader = requests.post(url, json=body, timeout=10, headers={
                "Authorization": f"Bearer {issuer.mint(app=True, roles=['Foundry.Reader'])}"})
            assert reader.status_code == 403 and reader.json()["error"]["code"] == "insufficient_permissions"
        finally:
            server.stop()


def test_a_vllm_that_is_down_is_a_502_in_the_envelope(keys):
    with VllmStandIn() as gone:
        port = gone.port
    server = ThreadedServer(lambda: make_app(port, auth=AuthService.from_settings(AuthSettings(
        mode="api-key", api_keys_dir=str(keys))))).start()
    try:
        resp = requests.get(f"{server.url}/v1/x", headers={"api-key": PRIMARY}, timeout=20)
        assert resp.status_code == 502 and resp.json()["error"]["code"] == "upstream_unavailable"
    finally:
        server.stop()
