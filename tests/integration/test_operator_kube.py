"""Operator behaviour only a real apiserver can show: server-side validation of every child the builders produce,
and recovery from an apiserver outage in the middle of a reconcile (nothing lost, nothing duplicated)."""
import threading
import time
import uuid

import pytest

from foundry_inference.operator import names
from foundry_inference.operator.loop import Operator
from tests.integration.test_operator_reconcile import Env, wait_for
from tests.unit.operator.factories import children, converge, custom_model, isvc, mdep, settings

pytestmark = pytest.mark.integration


@pytest.fixture
def env(kube, kube_store):
    return Env("kube", kube_store, kube.create_namespace(f"kv-{uuid.uuid4().hex[:8]}"), kube)


VARIANTS = {
    "cpu-chat": {"replicas": 3, "displayName": "Chat", "env": [{"name": "A"}, {"name": "B", "value": "2"}],
                 "resources": {"requests": {"cpu": 2, "memory": "4Gi"}, "limits": {"cpu": "4000m", "memory": "8Gi"}}},
    "gpu-onnx": {"compute": "gpu", "resources": {"limits": {"gpu": 1}},
                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                                 {"operator": "Exists"},
                                 {"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute",
                                  "tolerationSeconds": 30}]},
    "gpu-vllm": {"compute": "gpu", "runtime": "vllm", "model": {"catalog": {"name": "Phi-4-mini-instruct"}},
                 "skipGpuResource": True, "nodeSelector": {"accelerator": "a100", "pool": "gpu"},
                 "vllm": {"preferences": {"max_model_len": 8192, "enforce_eager": True, "hf_token": "x"},
                          "modelCacheStorageGi": 20}},
    "byo-predictive": {"workloadType": "predictive", "port": 8000,
                       "model": {"custom": {"registry": "myacr.azurecr.io", "repository": "models/iris", "tag": "v1",
                                            "credentials": {"secretRef": {"name": "acr", "usernameKey": "user"}}}}},
    "ref-model": {"model": {"ref": "iris"}, "workloadType": "predictive", "authentication": {"enabled": False}},
    "endpoint-tls": {"endpoint": {"enabled": True, "host": "models.example.com", "path": "/api/phi",
                                  "pathType": "Prefix", "ingressClassName": "nginx",
                                  "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "10m"},
                                  "tls": {"enabled": True, "secretName": "wildcard-tls"}}},
    "endpoint-nohost": {"endpoint": {"enabled": True, "tls": {"enabled": True}}},
    "9starts-with-digit": {},
    ("x" * 63): {"endpoint": {"enabled": True}},
}


def test_the_apiserver_accepts_every_child_of_every_kind_of_deployment(env):
    env.store.create(custom_model("iris", env.ns))
    for name, spec in VARIANTS.items():
        env.store.create(mdep(name, env.ns, **spec))
    env.store.create(isvc("legacy-byo", env.ns, hardware="gpu", inferenceType="predictive",
                          resources={"limits": {"gpu": 2}},
                          modelSource={"byo": {"registry": "r.example.com", "repository": "m", "tag": "1"}}))
    op = Operator(env.store, settings(env.ns))
    converge(op)
    for obj in env.store.list_all("ModelDeployment", env.ns) + env.store.list_all("InferenceService", env.ns):
        name, st = obj["metadata"]["name"], obj["status"]
        assert st["state"] == "Creating", (name, st.get("message"))
        kids = {kind for kind, _ in children(env.store, env.ns, name)}
        expected = {"Deployment", "Service", "ConfigMap", "Secret"}
        if (obj["spec"].get("endpoint") or {}).get("enabled"):
            expected.add("Ingress")
        assert kids == expected, name
    vllm = env.store.get("Deployment", env.ns, "gpu-vllm")["spec"]["template"]["spec"]
    assert "--hf-token" not in vllm["containers"][0]["args"] and "--enforce-eager" in vllm["containers"][0]["args"]
    assert "nvidia.com/gpu" not in vllm["containers"][0]["resources"].get("limits", {})
    assert vllm["volumes"][0] == {"name": "models", "emptyDir": {"sizeLimit": "20Gi"}}
    gpu = env.store.get("Deployment", env.ns, "gpu-onnx")["spec"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["strategy"] == {"type": "Recreate"}
    digit = env.store.get("ModelDeployment", env.ns, "9starts-with-digit")["status"]
    assert digit["internalEndpoint"].startswith(f"https://{names.service('9starts-with-digit')}.")
    # every child is in sync with what the apiserver stored (defaults and canonical quantities included), once the
    # deployment controller has created every Deployment's replicas (status.replicas counts them)
    wait_for(lambda: all((d.get("status") or {}).get("replicas") == d["spec"]["replicas"]
                         for d in env.store.list_all("Deployment", env.ns)), 60, "the controller's replicas")
    converge(op)
    report = op.run_pass()
    assert report.child_writes == 0 and report.status_writes == 0 and report.failed == 0


def test_apiserver_outage_mid_reconcile_loses_and_duplicates_nothing(kube, env):
    names_ = [f"m{i}" for i in range(10)]
    for name in names_:
        env.store.create(mdep(name, env.ns))
    op = Operator(env.store, settings(env.ns, pollIntervalSeconds=0.1))
    failures = []
    original = op.run_pass

    def counted():
        try:
            return original()
        except Exception as exc:
            failures.append(exc)
            raise

    op.run_pass = counted
    stop = threading.Event()
    thread = threading.Thread(target=op.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: env.store.list_all("Deployment", env.ns), 30, "the first Deployment")
        kube.stop_apiserver()                                    # in the middle of the first passes
        time.sleep(3)
        kube.start_apiserver()

        def converged():
            return all((env.store.get("ModelDeployment", env.ns, n).get("status") or {}).get("state") == "Creating"
                       and len(children(env.store, env.ns, n)) == 5 for n in names_)

        wait_for(converged, 60, "all deployments converged after the outage")
        assert failures, "the operator never saw the outage"
        assert len(env.store.list_all("Model", env.ns)) == 1       # lazily registered once
        assert len(env.store.list_all("Secret", env.ns, label_selector=f"{names.COMPONENT_LABEL}=api-keys")) == 10
        env.make_ready("m0")
        wait_for(lambda: env.store.get("ModelDeployment", env.ns, "m0")["status"]["state"] == "Running", 30,
                 "m0 Running")
        keys_before = env.store.get("Secret", env.ns, "m0-api-keys")
        uids_before = {k: v["metadata"]["uid"] for k, v in children(env.store, env.ns, "m0").items()}

        failures.clear()
        kube.stop_apiserver()
        time.sleep(2)
        kube.start_apiserver()
        passes = op.passes
        wait_for(lambda: op.passes >= passes + 3, 30, "passes after the second outage")
        keys_after = env.store.get("Secret", env.ns, "m0-api-keys")
        assert keys_after["data"] == keys_before["data"]
        assert keys_after["metadata"]["uid"] == keys_before["metadata"]["uid"]
        assert {k: v["metadata"]["uid"] for k, v in children(env.store, env.ns, "m0").items()} == uids_before
        assert env.store.get("ModelDeployment", env.ns, "m0")["status"]["state"] == "Running"
    finally:
        stop.set()
        thread.join(30)
        op.close()
        if "kube-apiserver" not in kube.procs:
            kube.start_apiserver()
