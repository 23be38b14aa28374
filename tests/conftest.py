"""Shared fixtures: the real Kubernetes control plane (session-wide) and a fresh namespace per test."""
import os
import uuid

import pytest

from tests.kube.harness import KubeCluster, binaries_available
from tests.support.require import require_tool, unavailable

# No test may reach the real Azure services (a CI machine with internet would start downloading multi-GB models for
# every test that deploys the sample catalog's phi-4-mini): the defaults point at names that never resolve (RFC 2606
# `.invalid`), so such a deployment fails fast with "no model registry region answered". Tests of the download use
# tests/support/azure_fake.py, which overrides these. Set here, so `up` and fetcher subprocesses inherit them.
os.environ.setdefault("FOUNDRY_AZUREML_REGISTRY_URL", "https://{region}.api.azureml.invalid")
os.environ.setdefault("FOUNDRY_AZURE_CATALOG_URL", "https://ai.azure.invalid/api/{region}/ux/v1.0")


@pytest.fixture(scope="session")
def kube():
    """A real etcd + kube-apiserver + kube-controller-manager with the chart's CRDs installed.

    Skipped when the binaries are not built, unless under CI (or FOUNDRY_REQUIRE_KUBE=1), where that is a failure.
    """
    if not binaries_available():
        unavailable("Kubernetes test binaries not built: run tests/kube/build-kube.sh", topic="kube")
    cluster = KubeCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def nginx():
    """The nginx binary (the TLS sidecar); skipped on a developer machine without it, a failure under CI."""
    return require_tool("nginx", "apt-get install nginx-light")


@pytest.fixture
def kube_namespace(kube):
    return kube.create_namespace(f"t-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def embedded_store(tmp_path):
    from foundry_inference.store.embedded import EmbeddedStore
    store = EmbeddedStore.with_chart_crds(tmp_path / "store.db")
    yield store
    store.close()


@pytest.fixture
def kube_store(kube):
    from foundry_inference.store.kube import KubernetesStore
    store = KubernetesStore(kubeconfig=kube.kubeconfig)
    yield store
    store.close()
