"""Autoscaling on the real cluster (docs/autoscaling.md, "On a cluster"): a scale-to-zero iris goes to zero (its pods
deleted, its Service on the activator pod), a keyed request over TLS wakes it and is answered (the cold start is
measured), a request without a key is refused and starts nothing; a chat deployment under a few concurrent clients
scales above one replica from the gauges the operator reads at each pod's IP and metrics port. No 5xx anywhere."""
import threading
import time

import pytest
import requests

from tests.e2e.cluster_support import NS, NUMBERS, deleted_after, expose, live, wait_for, wait_state

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(1800)]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
IDLE_S = 30             # scaleToZeroAfterSeconds of the iris deployment (the checks after a wake fit in it)


def live_pods(core, selector):
    return [p for p in core.list_namespaced_pod(NS, label_selector=selector).items if not p.metadata.deletion_timestamp]


def model_pods(core, name):
    return live_pods(core, f"foundry.azure.com/deployment={name},app.kubernetes.io/component=model-server")


def selects_activator(core, name):
    return core.read_namespaced_service(name, NS).spec.selector.get("foundry.azure.com/activator") == name


def scaled(apps, name):
    return apps.read_namespaced_deployment(name, NS).spec.replicas


def predict(platform, endpoint, key, timeout=200):
    import base64
    import json
    data = base64.b64encode(json.dumps(ROWS).encode()).decode()
    body = {"items": [{"content_type": "application/json", "encoder": "base64", "data": data}]}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(f"{endpoint}/v1/predict", json=body, headers=headers, verify=platform.ca, timeout=timeout)


@pytest.fixture(scope="module")
def apps(node):
    import kubernetes
    return kubernetes.client.AppsV1Api(kubernetes.config.new_client_from_config(node.info_dict["kubeconfig"]))


def endpoint_ips(core, name):
    subsets = core.read_namespaced_endpoints(name, NS).subsets or []
    return sorted(a.ip for s in subsets for a in s.addresses or [])


def wait_zero(node, core, net, platform, name):
    """ScaledToZero, the model pods deleted, and the Service's endpoints on the activator pod alone."""
    started = time.monotonic()
    status = wait_state(node, core, net, platform, name, "ScaledToZero", 300)
    wait_for(node, lambda: not model_pods(core, name), 120, f"{name}'s model pods to be deleted")
    activator = sorted(p.status.pod_ip for p in live_pods(core, f"foundry.azure.com/activator={name}"))
    wait_for(node, lambda: endpoint_ips(core, name) == activator, 60,
             f"{name}'s endpoints on the activator {activator} (selector "
             f"{core.read_namespaced_service(name, NS).spec.selector})")
    return status, time.monotonic() - started



def running(node, core, net, platform, name, timeout):
    """Wait for Running; the status, the deployment's endpoint (its Service reachable in the namespace, the install's
    CA trusted) and its primary key."""
    status = wait_state(node, core, net, platform, name, "Running", timeout)
    endpoint = expose(core, net, NS, status["internalEndpoint"])
    platform._ca = platform.ca_path()
    return status, endpoint, net.call(platform.keys, name, NS)[0]


def test_iris_scales_to_zero_and_a_keyed_request_wakes_it_through_the_activator(node, core, apps, net, platform):
    name = "iris-zero"
    net.call(platform.deploy, name, {"catalog": {"name": "iris-classifier"}}, namespace=NS,
             autoscaling={"minReplicas": 0, "maxReplicas": 2, "scaleToZeroAfterSeconds": IDLE_S})
    with deleted_after(net, platform, name):
        status, endpoint, key = running(node, core, net, platform, name, 300)
        first = net.call(predict, platform, endpoint, key)
        assert first.status_code == 200, first.text
        # the activator Deployment and the replicas Service exist while minReplicas is 0
        wait_for(node, lambda: (apps.read_namespaced_deployment(f"{name}-activator", NS).status.available_replicas
                                or 0) >= 1, 300, "the activator pod to be available")
        assert core.read_namespaced_service(f"{name}-replicas", NS).spec.selector == {
            "app.kubernetes.io/managed-by": "inference-operator", "foundry.azure.com/deployment": name}
        activator_pod = live_pods(core, f"foundry.azure.com/activator={name}")[0]
        assert activator_pod.spec.service_account_name == "inference-activator"
        assert {c.name for c in activator_pod.spec.containers} == {"activator", "tls-proxy"}

        _status, idle_s = wait_zero(node, core, net, platform, name)
        NUMBERS["iris idle -> ScaledToZero, pods gone (s)"] = round(idle_s, 1)
        assert selects_activator(core, name)
        assert scaled(apps, name) == 0

        # no key: 401 from the activator (the sidecar's TLS, the deployment's certificate), and nothing starts
        refused = net.call(predict, platform, endpoint, None, timeout=30)
        assert refused.status_code == 401, refused.text
        bad = net.call(predict, platform, endpoint, "not-a-key-" * 4, timeout=30)
        assert bad.status_code == 401, bad.text
        time.sleep(4)
        assert scaled(apps, name) == 0 and not model_pods(core, name)

        colds = []
        for round_ in range(3):
            if round_:
                wait_zero(node, core, net, platform, name)
                assert selects_activator(core, name)
            started = time.monotonic()
            answer = net.call(predict, platform, endpoint, key)
            colds.append(time.monotonic() - started)
            assert answer.status_code == 200, answer.text
            assert answer.json()["items"], answer.text
            live(node)
        colds.sort()
        NUMBERS["iris cold start: first request after scale to zero, min/median/max (s)"] = [
            round(colds[0], 2), round(colds[len(colds) // 2], 2), round(colds[-1], 2)]
        # the wake is recorded as a decision and the Service goes back to the model pods
        status = wait_state(node, core, net, platform, name, "Running", 120)
        assert status["lastScaling"]["reason"] == "a request arrived while scaled to zero", status
        wait_for(node, lambda: not selects_activator(core, name), 60, "the Service back on the model pods")
        warm = []
        for _ in range(5):
            started = time.monotonic()
            assert net.call(predict, platform, endpoint, key).status_code == 200
            warm.append(time.monotonic() - started)
        NUMBERS["iris warm request (baseline), median (s)"] = round(sorted(warm)[2], 3)


def test_chat_scales_above_one_replica_on_concurrent_clients(node, core, apps, net, platform):
    """The operator reads each chat pod's running/waiting sequences at <podIP>:9464 over the pod network."""
    name = "chat-load"
    net.call(platform.deploy, name, {"catalog": {"name": "smollm2-135m-instruct"}}, namespace=NS,
             autoscaling={"minReplicas": 1, "maxReplicas": 2, "targetConcurrency": 1})
    with deleted_after(net, platform, name):
        status, endpoint, key = running(node, core, net, platform, name, 600)
        stop, codes, errors = threading.Event(), [], []

        def client():
            import openai
            chat = platform.openai_client(endpoint, key)
            while not stop.is_set():
                try:
                    chat.chat.completions.create(model="smollm2-135m-instruct", max_tokens=64,
                                                 messages=[{"role": "user", "content": "Count to fifty."}])
                    codes.append(200)
                except openai.APIStatusError as exc:
                    codes.append(exc.status_code)
                except openai.APIError as exc:
                    errors.append(repr(exc))

        threads = [threading.Thread(target=net.call, args=(client,), daemon=True) for _ in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        try:
            wait_for(node, lambda: scaled(apps, name) >= 2, 180, "the autoscaler to scale chat-load up")
            NUMBERS["chat, 4 clients: load -> 2 replicas decided (s)"] = round(time.monotonic() - started, 1)
            wait_for(node, lambda: len([p for p in model_pods(core, name) if any(
                c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]) >= 2, 300,
                "the second chat pod Ready")
            NUMBERS["chat, 4 clients: load -> 2 replicas Ready (s)"] = round(time.monotonic() - started, 1)
        finally:
            stop.set()
            for t in threads:
                t.join(180)
        status = net.call(platform.deployment, name, NS)["status"]
        assert status["lastScaling"]["replicas"] == 2, status
        assert codes and not [c for c in codes if c >= 500], codes
        assert not errors, errors[:3]


def test_a_streaming_chat_request_at_zero_wakes_smollm2_and_streams_through_the_activator(node, core, apps, net,
                                                                                        platform):
    """The first request after scale to zero is a streaming chat completion (the official openai client): the
    activator holds it while SmolLM2's pod starts, then the server-sent events stream through it."""
    name = "chat-zero"
    net.call(platform.deploy, name, {"catalog": {"name": "smollm2-135m-instruct"}}, namespace=NS,
             autoscaling={"minReplicas": 0, "maxReplicas": 1, "scaleToZeroAfterSeconds": 20})
    with deleted_after(net, platform, name):
        status, endpoint, key = running(node, core, net, platform, name, 600)
        wait_for(node, lambda: (apps.read_namespaced_deployment(f"{name}-activator", NS).status.available_replicas
                                or 0) >= 1, 300, "the activator pod to be available")
        colds = []
        for _ in range(2):
            wait_zero(node, core, net, platform, name)

            def chat():
                client = platform.openai_client(endpoint, key)
                started = time.monotonic()
                stream = client.chat.completions.create(
                    model="smollm2-135m-instruct", stream=True, max_tokens=16,
                    messages=[{"role": "user", "content": "What is the capital of France?"}])
                pieces, first = [], None
                for chunk in stream:
                    if chunk.choices:
                        first = first or time.monotonic() - started
                        pieces.append(chunk.choices[0].delta.content or "")
                return first, pieces
            first, pieces = net.call(chat)
            assert len(pieces) > 1 and "".join(pieces).strip(), pieces
            colds.append(first)
        NUMBERS["SmolLM2 cold start: first streamed chunk after scale to zero, each round (s)"] = [
            round(c, 2) for c in colds]
