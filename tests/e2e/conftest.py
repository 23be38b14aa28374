"""The real single-node cluster (tests/kube/cluster.py) and the Helm release on it, shared by every module
tests/e2e/test_cluster*.py: one cluster and one release per session. Cluster tests run after every other test of the
session (the cluster's processes would otherwise load the machine under the timing-sensitive ones), and the tests
marked `cluster_teardown` (they uninstall the release) run last of all."""
import base64
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.cluster_support import NS, NUMBERS, RELEASE, pods_ready, prerequisites, wait_for


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        if item.get_closest_marker("cluster_teardown"):
            return 2
        return 1 if item.get_closest_marker("cluster") else 0
    items[:] = sorted(items, key=rank)          # stable: each group keeps its collection order


@pytest.fixture(scope="session")
def node():
    prerequisites()
    from tests.kube.cluster import Cluster
    state = Path(tempfile.mkdtemp(prefix="fic-", dir="/tmp"))
    cluster = Cluster(state)
    started = time.monotonic()
    try:
        info = cluster.up()
    except BaseException:
        cluster.stop()
        raise
    NUMBERS["cluster up (s)"] = round(time.monotonic() - started, 1)
    for name, image in info["images"].items():
        NUMBERS[f"image {name} (MB)"] = round(image["bytes"] / 1e6, 1)
    cluster.info_dict = info
    yield cluster
    print("\ncluster numbers: " + json.dumps(NUMBERS), flush=True)
    if os.environ.get("FOUNDRY_KEEP_CLUSTER") == "1":       # debugging: leave it up, `cluster.py down` removes it
        print(f"cluster kept: {json.dumps(info)}", flush=True)
        return
    cluster.stop()
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def net(node):
    from tests.kube.client import NetnsClient
    return NetnsClient(node.info_dict)


@pytest.fixture(scope="session")
def core(node):
    import kubernetes
    return kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(node.info_dict["kubeconfig"]))


@pytest.fixture(scope="session")
def release(node, core):
    """The chart installed by the Helm SDK with the local-images values; the platform's pods Ready."""
    import yaml

    from tests.support import helm
    info = node.info_dict
    try:
        core.create_namespace({"metadata": {"name": NS}})
    except Exception:  # noqa: BLE001 - already there
        pass
    values = yaml.safe_load(Path(info["values"]).read_text())
    started = time.monotonic()
    helm.install(info["kubeconfig"], values, release=RELEASE, namespace=NS, timeout=300)
    pods = wait_for(node, lambda: pods_ready(core, NS), 300, "the operator and control-plane pods to be Ready")
    NUMBERS["helm install -> platform pods Ready (s)"] = round(time.monotonic() - started, 1)
    yield {"values": values, "installed": started, "pods": [p.metadata.name for p in pods]}


@pytest.fixture(scope="session")
def platform(node, core, net, release, tmp_path_factory):
    from tests.e2e.quickstart_walkthrough import Platform

    class ClusterPlatform(Platform):
        def __init__(self, url, admin_key, ca):
            import requests
            self.url, self._ca = url, ca
            self.admin = requests.Session()
            self.admin.headers["Authorization"] = f"Bearer {admin_key}"

        @property
        def ca(self):
            return self._ca

    secret = core.read_namespaced_secret("inference-operator-admin-key", NS)
    admin_key = base64.b64decode(secret.data["admin-key"]).decode()
    service = core.read_namespaced_service("inference-operator-api", NS)
    url = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}"
    ca_dir = tmp_path_factory.mktemp("ca")

    def ca_path():
        ca = core.read_namespaced_secret("foundry-inference-ca", NS)
        (ca_dir / "ca.crt").write_bytes(base64.b64decode(ca.data["tls.crt"]))
        return str(ca_dir / "ca.crt")
    plat = ClusterPlatform(url, admin_key, None)
    plat.ca_path = ca_path
    return plat
