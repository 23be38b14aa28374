"""A real control plane (Tornado on a loopback port) over each store, with the sample catalog synced and an
admin key."""
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from foundry_inference.apps.controlplane.app import control_plane_auth, make_app
from foundry_inference.apps.controlplane.settings import ControlPlaneSettings
from tests.support.servers import ThreadedServer

CATALOG = Path(__file__).resolve().parents[3] / "charts" / "foundry-inference" / "files" / "catalog.json"
STORES = [pytest.param("embedded", marks=pytest.mark.unit), pytest.param("kube", marks=pytest.mark.integration)]
ADMIN_KEY = "fndry-admin-test-" + uuid.uuid4().hex


@dataclass
class ControlPlane:
    url: str
    http: requests.Session
    store: object
    ns: str          # a namespace for deployments
    other_ns: str
    operator_ns: str
    new_namespace: object

    def api(self, method, path, **kwargs):
        return self.http.request(method, self.url + path, timeout=30, **kwargs)


def install_catalog(store, namespace, text=None):
    store.create({"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "foundry-local-catalog", "namespace": namespace,
                               "annotations": {"foundry.azure.com/last-sync": "2026-11-01T00:00:00Z"}},
                  "data": {"catalog.json": text or CATALOG.read_text()}})


@pytest.fixture(params=STORES)
def cp(request, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    if request.param == "embedded":
        store = request.getfixturevalue("embedded_store")
        new_namespace = lambda name: name  # noqa: E731 - the embedded store needs no Namespace objects
    else:
        kube = request.getfixturevalue("kube")
        store = request.getfixturevalue("kube_store")
        new_namespace = kube.create_namespace
    ns, other, opns = (new_namespace(f"{p}-{suffix}") for p in ("apps", "team", "fl-op"))
    key_file = tmp_path / "admin-key"
    key_file.write_text(ADMIN_KEY + "\n")
    install_catalog(store, opns)
    config = ControlPlaneSettings(operator_namespace=opns, catalog_cache_s=0)
    server = ThreadedServer(lambda: make_app(store, config, auth=control_plane_auth(
        mode="api-key", admin_key_file=str(key_file), api_keys_dir=None))).start()
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
    yield ControlPlane(server.url, http, store, ns, other, opns, new_namespace)
    server.stop()


def dumps(obj):
    return json.dumps(obj)
