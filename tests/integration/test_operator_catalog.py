"""Catalog sync against the real apiserver (integration) and the embedded store (unit): a good source lands in the
`foundry-local-catalog` ConfigMap with version and last-sync; a broken one keeps the last good catalog and says why;
the control plane's sync request (annotation) and the timer trigger a sync."""
import datetime
import json
import shutil
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from foundry_inference.operator import catalog_sync, names
from foundry_inference.operator.settings import default_catalog_source
from tests.unit.operator.factories import converge, mdep, settings

STORES = [pytest.param("embedded", marks=pytest.mark.unit), pytest.param("kube", marks=pytest.mark.integration)]
T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


@pytest.fixture(params=STORES)
def env(request, tmp_path):
    source = tmp_path / "catalog.json"
    shutil.copy(default_catalog_source(), source)
    if request.param == "embedded":
        return request.getfixturevalue("embedded_store"), "ops", source
    kube = request.getfixturevalue("kube")
    return request.getfixturevalue("kube_store"), kube.create_namespace(f"cat-{uuid.uuid4().hex[:8]}"), source


def configmap(store, ns):
    return store.get("ConfigMap", ns, names.CATALOG_CONFIGMAP)


def test_first_sync_writes_the_configmap_with_version_and_last_sync(env):
    store, ns, source = env
    sync = catalog_sync.CatalogSync(store, settings(ns, catalog={"source": str(source)}))
    catalog = sync.tick(T0)
    cm = configmap(store, ns)
    annotations = cm["metadata"]["annotations"]
    assert annotations[names.LAST_SYNC] == "2026-03-01T12:00:00Z"
    assert annotations[names.CATALOG_VERSION] == "2026.11.1"
    assert json.loads(cm["data"][names.CATALOG_KEY])["version"] == "2026.11.1"
    assert catalog.find("phi-4-mini") is not None
    assert cm["metadata"]["labels"][names.MANAGED_BY] == "inference-operator"
    # not due again before the interval, due after it
    sync.tick(T0 + datetime.timedelta(hours=1))
    assert sync.syncs == 1
    sync.tick(T0 + datetime.timedelta(hours=6, seconds=1))
    assert sync.syncs == 2
    assert configmap(store, ns)["metadata"]["annotations"][names.LAST_SYNC] == "2026-03-01T18:00:01Z"


def test_broken_source_keeps_the_last_good_catalog_and_reports_why(env):
    store, ns, source = env
    sync = catalog_sync.CatalogSync(store, settings(ns, catalog={"source": str(source)}))
    sync.tick(T0)
    good = configmap(store, ns)["data"][names.CATALOG_KEY]

    source.write_text('{"version": "2", "models": [{"alias": "x"}]}')           # invalid entry
    later = T0 + datetime.timedelta(minutes=5)
    store.patch("ConfigMap", ns, names.CATALOG_CONFIGMAP,
                {"metadata": {"annotations": {names.SYNC_REQUESTED: catalog_sync.rfc3339(later)}}})
    catalog = sync.tick(later)
    cm = configmap(store, ns)
    assert cm["data"][names.CATALOG_KEY] == good
    assert "variants" in cm["metadata"]["annotations"][names.SYNC_ERROR]
    assert cm["metadata"]["annotations"][names.LAST_SYNC] == "2026-03-01T12:00:00Z"
    assert catalog.find("phi-4-mini") is not None            # the operator keeps resolving with the good one
    # the failed attempt answered the request: no retry on every pass
    sync.tick(later + datetime.timedelta(seconds=30))
    assert sync.syncs == 1

    source.unlink()
    even_later = later + datetime.timedelta(minutes=1)
    store.patch("ConfigMap", ns, names.CATALOG_CONFIGMAP,
                {"metadata": {"annotations": {names.SYNC_REQUESTED: catalog_sync.rfc3339(even_later)}}})
    sync.tick(even_later)
    assert "No such file" in configmap(store, ns)["metadata"]["annotations"][names.SYNC_ERROR]

    shutil.copy(default_catalog_source(), source)                 # fixed: the next request syncs and clears it
    fixed = even_later + datetime.timedelta(minutes=1)
    store.patch("ConfigMap", ns, names.CATALOG_CONFIGMAP,
                {"metadata": {"annotations": {names.SYNC_REQUESTED: catalog_sync.rfc3339(fixed)}}})
    sync.tick(fixed)
    annotations = configmap(store, ns)["metadata"]["annotations"]
    assert names.SYNC_ERROR not in annotations and annotations[names.LAST_SYNC] == catalog_sync.rfc3339(fixed)


def test_a_sync_request_from_the_control_plane_picks_up_a_new_model(env):
    store, ns, source = env
    sync = catalog_sync.CatalogSync(store, settings(ns, catalog={"source": str(source)}))
    sync.tick(T0)
    doc = json.loads(source.read_text())
    doc["version"] = "2026.12.0"
    new = json.loads(json.dumps(doc["models"][0]))
    new["alias"] = "brand-new"
    for v in new["variants"]:
        v["id"] = v["id"].replace("Phi-4-mini-instruct", "Brand-new")
    doc["models"].append(new)
    source.write_text(json.dumps(doc))
    assert sync.tick(T0 + datetime.timedelta(seconds=10)).find("brand-new") is None      # not requested yet
    store.patch("ConfigMap", ns, names.CATALOG_CONFIGMAP, {"metadata": {"annotations": {
        names.SYNC_REQUESTED: "2026-03-01T12:00:20Z"}}})
    catalog = sync.tick(T0 + datetime.timedelta(seconds=21))
    assert catalog.find("brand-new") is not None
    assert configmap(store, ns)["metadata"]["annotations"][names.CATALOG_VERSION] == "2026.12.0"


def test_no_catalog_yet_means_pending_deployments_until_a_sync_succeeds(env):
    store, ns, source = env
    source.write_text("not json")
    from tests.unit.operator.factories import new_operator
    op = new_operator(store, ns, catalog={"source": str(source)})
    store.create(mdep("phi", ns))
    converge(op)
    st = store.get("ModelDeployment", ns, "phi")["status"]
    assert st["state"] == "Pending" and "catalog" in st["message"]
    assert "not JSON" in configmap(store, ns)["metadata"]["annotations"][names.SYNC_ERROR]
    shutil.copy(default_catalog_source(), source)
    store.patch("ConfigMap", ns, names.CATALOG_CONFIGMAP, {"metadata": {"annotations": {
        names.SYNC_REQUESTED: catalog_sync.rfc3339(catalog_sync.datetime.datetime.now(datetime.timezone.utc))}}})
    converge(op)
    assert store.get("ModelDeployment", ns, "phi")["status"]["state"] == "Creating"


@pytest.mark.unit
def test_http_source_and_its_errors(tmp_path):
    body = open(default_catalog_source(), "rb").read()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's API
            if self.path == "/catalog.json":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert catalog_sync.read_source(f"{url}/catalog.json") == body
        with pytest.raises(catalog_sync.SourceError, match="HTTP 404"):
            catalog_sync.read_source(f"{url}/missing.json")
        with pytest.raises(catalog_sync.SourceError, match="larger than"):
            catalog_sync.read_source(f"{url}/catalog.json", limit=100)
    finally:
        server.shutdown()
        server.server_close()
