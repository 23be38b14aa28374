"""The control plane's metrics: every request counted by method, route and status, served on FOUNDRY_METRICS_PORT
without a key (/metrics only) while the API itself asks for one."""
import asyncio
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from foundry_inference.apps.controlplane.app import control_plane_auth, make_app, serve
from foundry_inference.apps.controlplane.settings import ControlPlaneSettings
from tests.support.procs import free_port

pytestmark = pytest.mark.unit
KEY = "fndry-admin-metrics-" + "z" * 24


def test_requests_are_counted_and_served_on_the_keyless_port(embedded_store, tmp_path):
    (tmp_path / "admin-key").write_text(KEY + "\n")
    port, metrics_port = free_port(), free_port()
    app = make_app(embedded_store, ControlPlaneSettings(metrics_port=metrics_port),
                   auth=control_plane_auth(mode="api-key", admin_key_file=str(tmp_path / "admin-key"),
                                           api_keys_dir=None))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(serve(app, port, "127.0.0.1", stop)),
                              daemon=True)
    thread.start()
    base, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(metrics_url, timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the metrics port never opened"
                time.sleep(0.05)
        listing = f"{base}/api/v1/namespaces/apps/deployments"
        assert requests.get(listing, timeout=5).status_code == 401
        ok = requests.get(listing, headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
        assert ok.status_code == 200, ok.text
        r = requests.get(metrics_url, timeout=5)
        assert r.status_code == 200
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(r.text) for s in f.samples}
        counted = {labels: v for (name, labels), v in samples.items() if name == "foundry_api_requests_total"}
        assert sum(v for labels, v in counted.items() if ("status", "401") in labels) == 1
        assert sum(v for labels, v in counted.items() if ("status", "200") in labels) == 1
        assert requests.get(metrics_url.replace("/metrics", "/deployments"), timeout=5).status_code == 404
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
    assert not thread.is_alive()
