"""The activator on its own, with the real auth module (API key files and Entra tokens from a real OIDC issuer on
loopback) and a real loopback replica that "starts" when woken: auth is checked before anything starts (a refused
request never wakes the deployment), the envelope follows the route, the hold bounds answer 429 + Retry-After, a
replica that cannot start answers 503 with the cause, and a stopping agent answers what it holds.

The workload is a small stand-in for the node agent's (the activator only asks it for its auth environment, its
replicas' ports and readiness path, and why it cannot start); everything on the wire is real."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import tornado.web

from foundry_inference.operator.autoscale.activator import Activator
from tests.support.oidc_issuer import LoopbackServer, OidcIssuer

from .test_vllm_auth_proxy import keys  # noqa: F401 - the deployment's key files

pytestmark = pytest.mark.integration


class Replica(tornado.web.RequestHandler):
    def get(self):
        self.finish({"ready": True, "credentials": bool(self.request.headers.get("api-key") or
                                                      self.request.headers.get("Authorization"))})

    def post(self):
        self.finish({"echo": self.request.body.decode()})


class Workload:
    """The node agent's view of one deployment: woken means a replica starts (after `delay` s)."""

    def __init__(self, env, delay=0.3, fails=None):
        self.uid, self.namespace, self.name = "u1", "team-a", "phi"
        self.env, self.delay, self.fails = env, delay, fails
        self.wakes = 0
        self.replica = None

    def wake(self, _workload):
        self.wakes += 1
        if self.replica is None and not self.fails:
            def start():
                time.sleep(self.delay)
                self.replica = LoopbackServer(tornado.web.Application([(r"/.*", Replica)])).start()
            threading.Thread(target=start, daemon=True).start()

    def app_env(self):
        return dict(self.env)

    def readiness_path(self):
        return "/ready"

    def replica_ports(self):
        return [(int(self.replica.url.rsplit(":", 1)[1]), None)] if self.replica else []

    def start_failure(self):
        return self.fails

    def close(self):
        if self.replica:
            self.replica.stop()


def activator_for(workload, max_held=64, hold_timeout_s=30.0):
    from tests.unit.operator.test_autoscale_policy import params
    act = Activator(workload.wake)
    port = act.register(workload, params(max_held=max_held, hold_timeout_s=hold_timeout_s))
    return act, f"http://127.0.0.1:{port}"


def key_env(keys_dir):
    return {"FOUNDRY_AUTH_MODE": "api-key", "FOUNDRY_API_KEYS_DIR": str(keys_dir),
            "FOUNDRY_DEPLOYMENT_NAME": "phi", "FOUNDRY_DEPLOYMENT_NAMESPACE": "team-a"}


def test_attack_refused_credentials_never_wake_the_deployment(keys):  # noqa: F811
    workload = Workload(key_env(keys))
    act, url = activator_for(workload)
    try:
        for headers in ({}, {"api-key": "wrong"}, {"Authorization": "Bearer not-a-token"},
                        {"api-key": "x", "Authorization": "Bearer y"}):
            chat = requests.post(f"{url}/v1/chat/completions", json={}, headers=headers, timeout=10)
            assert chat.status_code in (400, 401) and chat.json()["error"]["code"], chat.text   # OpenAI envelope
            predict = requests.post(f"{url}/v1/predict", json={}, headers=headers, timeout=10)
            assert predict.status_code in (400, 401) and "detail" in predict.json()           # predictive envelope
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
        assert requests.get(f"{url}/v1/models", timeout=10).status_code == 401
        assert workload.wakes == 0 and workload.replica is None
        primary = (keys / "primary-key").read_text().strip()
        resp = requests.post(f"{url}/v1/predict", data=b"hello", headers={"api-key": primary}, timeout=30)
        assert resp.status_code == 200 and resp.json() == {"echo": "hello"} and workload.wakes == 1
    finally:
        act.stop()
        workload.close()


def test_entra_tokens_are_checked_before_a_wake_up(keys):  # noqa: F811
    with OidcIssuer() as issuer:
        workload = Workload({**key_env(keys), "FOUNDRY_AUTH_MODE": "both", "FOUNDRY_ENTRA_TENANT_ID": issuer.tenant_id,
                             "FOUNDRY_ENTRA_CLIENT_ID": issuer.client_id,
                             "FOUNDRY_ENTRA_AUTHORITY": issuer.authority})
        act, url = activator_for(workload)
        try:
            reader = requests.post(f"{url}/v1/chat/completions", json={}, timeout=10, headers={
                "Authorization": f"Bearer {issuer.mint(app=True, roles=['Foundry.Reader'])}"})
            assert reader.status_code == 403 and reader.json()["error"]["code"] == "insufficient_permissions"
            assert workload.wakes == 0
            user = requests.post(f"{url}/v1/chat/completions", json={}, timeout=30, headers={
                "Authorization": f"Bearer {issuer.mint(app=True, roles=['Foundry.User'])}"})
            assert user.status_code == 200 and workload.wakes == 1
        finally:
            act.stop()
            workload.close()


def test_attack_hold_bounds_and_a_failed_start(keys):  # noqa: F811
    primary = {"api-key": (keys / "primary-key").read_text().strip()}
    slow = Workload(key_env(keys), delay=60)
    act, url = activator_for(slow, max_held=2, hold_timeout_s=1.5)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _i: requests.post(f"{url}/v1/chat/completions", json={}, headers=primary,
                                                             timeout=30), range(4)))
        codes = sorted(a.status_code for a in answers)
        assert codes == [429] * 4, codes          # two over the count at once, two after the hold timeout
        assert all(a.headers["Retry-After"] == "2" and a.json()["error"]["type"] == "rate_limit_error"
                   for a in answers)
        assert time.monotonic() - started < 10
    finally:
        act.stop()
        slow.close()
    broken = Workload(key_env(keys), fails="the model server exited with 1: cannot load model.onnx")
    act, url = activator_for(broken)
    try:
        resp = requests.post(f"{url}/v1/predict", json={}, headers=primary, timeout=30)
        assert resp.status_code == 503 and "cannot load model.onnx" in resp.json()["detail"]
    finally:
        act.stop()


def test_a_stopping_agent_answers_what_it_holds(keys):  # noqa: F811
    primary = {"api-key": (keys / "primary-key").read_text().strip()}
    slow = Workload(key_env(keys), delay=60)
    act, url = activator_for(slow)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(requests.post, f"{url}/v1/chat/completions", json={}, headers=primary, timeout=30)
        time.sleep(0.5)
        act.stop()
        resp = held.result()
    assert resp.status_code == 503 and "stopping" in resp.json()["error"]["message"]
