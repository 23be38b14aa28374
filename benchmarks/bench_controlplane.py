"""Control plane latency against a real kube-apiserver, beside the same calls made directly with the `kubernetes`
client in the same run, plus the models list over a 1,000-entry catalog.

    .venv/bin/python benchmarks/bench_controlplane.py [--rounds 300]

Starts the test Kubernetes control plane (tests/kube, binaries from tests/kube/build-kube.sh) and the control plane as
a separate process (`foundry-inference control-plane`), so client and server do not share a GIL.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kubernetes
import urllib3

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from foundry_inference.store.kube import KubernetesStore  # noqa: E402
from tests.kube.harness import KubeCluster  # noqa: E402
from tests.support.procs import CLI, free_port, wait_http  # noqa: E402

GROUP, VERSION, PLURAL = "foundrylocal.azure.com", "v1", "modeldeployments"


def _summary(samples):
    samples = sorted(samples)
    return {"p50": statistics.median(samples), "p90": samples[int(len(samples) * 0.9)],
            "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))]}


def timed(*fns, rounds, warmup=20):
    """Time each of `fns` `rounds` times, interleaved (a, b, a, b, ...) so that load from elsewhere on the machine
    falls on every contender alike; returns one {p50, p90, p99} (ms) per function."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, samples, strict=True):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
    return [_summary(s) for s in samples]


def big_catalog(n=1000):
    computes = ["cpu", "gpu", "npu"]
    models = []
    for i in range(n):
        variants = [{"id": f"model-{i}-generic-{c}:1", "name": f"model-{i}-generic-{c}", "version": "1",
                     "compute": c, "executionProvider": "CPUExecutionProvider",
                     "artifact": {"uri": f"azureml://registries/azureml/models/model-{i}/versions/1"}}
                    for c in computes[: 1 + i % 3]]
        models.append({"alias": f"model-{i}", "displayName": f"Model {i}", "publisher": ["Microsoft", "Meta",
                                                                                          "Mistral"][i % 3],
                       "description": "benchmark entry", "license": "MIT",
                       "task": ["chat-completion", "classification"][i % 2], "source": "foundry-local",
                       "framework": "ONNX", "modelVersion": "1", "variants": variants})
    return json.dumps({"version": "bench", "models": models})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    cluster = KubeCluster().start()
    cp = plain = None
    try:
        ns = cluster.create_namespace("bench")
        opns = cluster.create_namespace("foundry-local-operator")
        store = KubernetesStore(kubeconfig=cluster.kubeconfig)
        for i in range(100):
            store.create({"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment",
                          "metadata": {"name": f"d-{i:03d}", "namespace": ns},
                          "spec": {"model": {"catalog": {"name": "phi-4-mini"}}, "compute": "cpu"}})
        store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "foundry-local-catalog",
                                                                           "namespace": opns},
                      "data": {"catalog.json": big_catalog()}})
        workdir = Path(tempfile.mkdtemp())
        key = "fndry-admin-bench"
        (workdir / "admin-key").write_text(key)
        port, plain_port = free_port(), free_port()
        env = {**os.environ, "FOUNDRY_AUTH_MODE": "api-key", "FOUNDRY_ADMIN_KEY_FILE": str(workdir / "admin-key"),
               "FOUNDRY_LOG_LEVEL": "warning"}
        # the shipped configuration (read cache on) and, beside it, the same control plane with the cache off
        cp = subprocess.Popen([CLI, "control-plane", "--kubeconfig",
                               cluster.kubeconfig, "--port", str(port), "--address", "127.0.0.1"], env=env)
        plain = subprocess.Popen([CLI, "control-plane", "--kubeconfig", cluster.kubeconfig, "--port",
                                  str(plain_port), "--address", "127.0.0.1"],
                                 env={**env, "FOUNDRY_READ_CACHE": "false"})
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=cp)
        wait_http(f"http://127.0.0.1:{plain_port}/readyz", proc=plain)
        # urllib3, the HTTP library under the kubernetes client, so both sides pay the same client cost; the answer is
        # decoded to a dict on both sides (the kubernetes client does that for custom objects).
        pool = urllib3.PoolManager(headers={"Authorization": f"Bearer {key}"})
        base = f"http://127.0.0.1:{port}/api/v1"

        class http:  # noqa: N801 - a tiny GET facade over the pool
            @staticmethod
            def get(url):
                return pool.request("GET", url)
        api = kubernetes.client.CustomObjectsApi(cluster.api_client())

        def check(resp):
            assert resp.status == 200, resp.data[:200]
            return json.loads(resp.data)

        plain_base = f"http://127.0.0.1:{plain_port}/api/v1"
        get_ours, get_plain, get_direct = timed(
            lambda: check(http.get(f"{base}/namespaces/{ns}/deployments/d-042")),
            lambda: check(http.get(f"{plain_base}/namespaces/{ns}/deployments/d-042")),
            lambda: api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "d-042"), rounds=args.rounds)
        list_ours, list_direct = timed(
            lambda: check(http.get(f"{base}/namespaces/{ns}/deployments?limit=100")),
            lambda: api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, limit=100), rounds=args.rounds // 3)
        results = {"GET one deployment": (get_ours, get_direct), "GET, read cache off": (get_plain, get_direct),
                   "LIST 100 deployments": (list_ours, list_direct)}
        floor, = timed(lambda: check(http.get(f"http://127.0.0.1:{port}/healthz")), rounds=args.rounds)
        models, = timed(lambda: check(http.get(f"{base}/models?name=model-1&compute=gpu&task=chat-completion"
                                               "&publisher=micro&limit=20")), rounds=args.rounds)
        print(f"{'call':24} {'control plane p50/p90/p99 ms':32} {'kubernetes client p50/p90/p99 ms':34} overhead p50")
        for name, (ours, direct) in results.items():
            fmt = lambda r: f"{r['p50']:.2f} / {r['p90']:.2f} / {r['p99']:.2f}"  # noqa: E731
            print(f"{name:24} {fmt(ours):32} {fmt(direct):34} {100 * (ours['p50'] / direct['p50'] - 1):+.0f}%")
        print(f"HTTP floor of the extra hop (GET /healthz, no store call): p50 {floor['p50']:.2f} ms")
        print(f"models list, 1,000-entry catalog, 4 filters: p50 {models['p50']:.2f} ms, p90 {models['p90']:.2f} ms, "
              f"p99 {models['p99']:.2f} ms")
    finally:
        for proc in (cp, plain):
            if proc is not None:
                proc.terminate()
                proc.wait(10)
        cluster.stop()


if __name__ == "__main__":
    main()
